"""Locate: causal tracing of the errors (ROME-style), and the layers it hands to editing.

- :mod:`.restorations` — what a trace restores (kind, layers, token scope or patch region);
- :mod:`.tracing` — the batched tracer and its one-restoration-per-pass reference;
- :mod:`.effects` — the effects table of every traced error (``trace_errors``);
- :mod:`.layers` — per-layer statistics, the choice of edit layers and its separation, 03's records;
- :mod:`.attribution` — ASTRA's patch attribution and the picture of a noisy copy.

The names below are the package's interface (``locate.trace_errors``, ``locate.layer_statistics``).
"""

from .attribution import corrupted_view, patch_attribution
from .effects import IMPORTANCE_COLUMNS, Traced, TraceSetup, effects_table, trace_errors
from .layers import (
    EDIT_LAYERS_FILE,
    STATISTICS_COLUMNS,
    SUMMARY_FILE,
    choose_edit_layers,
    edit_layers_from,
    layer_statistics,
    load_edit_layers,
    region_grid_table,
    region_max_effects,
    region_tables,
    save_edit_layers,
    save_summary,
    separation,
    summarize,
)
from .restorations import (
    KINDS,
    REGION_MAX,
    SCOPES,
    LocateError,
    Restoration,
    check_choices,
    module_for,
    parse_region,
    region_patches,
    region_restorations,
    region_scopes,
    restorations,
    token_mask,
    window_layers,
)
from .tracing import (
    clean_run,
    corrupted_run,
    forward_from,
    last_block_cls,
    make_noise,
    patch_embedding_std,
    restored_output,
    trace_reference,
    trace_sample,
)

__all__ = [
    "EDIT_LAYERS_FILE",
    "IMPORTANCE_COLUMNS",
    "KINDS",
    "REGION_MAX",
    "SCOPES",
    "STATISTICS_COLUMNS",
    "SUMMARY_FILE",
    "LocateError",
    "Restoration",
    "TraceSetup",
    "Traced",
    "check_choices",
    "choose_edit_layers",
    "clean_run",
    "corrupted_run",
    "corrupted_view",
    "edit_layers_from",
    "effects_table",
    "forward_from",
    "last_block_cls",
    "layer_statistics",
    "load_edit_layers",
    "make_noise",
    "module_for",
    "parse_region",
    "patch_attribution",
    "patch_embedding_std",
    "region_grid_table",
    "region_max_effects",
    "region_patches",
    "region_restorations",
    "region_scopes",
    "region_tables",
    "restorations",
    "restored_output",
    "save_edit_layers",
    "save_summary",
    "separation",
    "summarize",
    "token_mask",
    "trace_errors",
    "trace_reference",
    "trace_sample",
    "window_layers",
]
