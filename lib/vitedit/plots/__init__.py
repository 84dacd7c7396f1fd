"""Static matplotlib figures for the reports, and the compact tables shown beside them (the full
tables are in the run folder's CSV / JSON files), a module per notebook stage:

- :mod:`.common` — saving, showing a saved figure as its PNG, class names, colours;
- :mod:`.data` (01, 02), :mod:`.trace` (03), :mod:`.edit` (04, 05), :mod:`.evaluate` (06, 07),
  :mod:`.sweep` (08, 09).

The names below are the package's interface (``plots.confusion_matrices``, ...)."""

from . import common
from .common import (
    BETTER_WORSE,
    KIND_COLORS,
    MARKERS,
    METHOD_COLORS,
    SAVE_DPI,
    class_labels,
    method_colors,
    text_color,
)
from .data import (
    class_count_table,
    class_distribution,
    example_images,
    training_curves,
)
from .edit import (
    EDIT_SUMMARY_COLUMNS,
    edit_probabilities,
    edit_summary_table,
    eigen_spectra,
    layer_spectra,
    nullspace_dims,
    update_norms,
)
from .evaluate import (
    LEVEL_COLUMNS,
    MAX_SUMMARY_COLUMNS,
    SUMMARY_COLUMNS,
    confusion_improvement,
    confusion_matrices,
    fix_vs_regression,
    level_table,
    per_class_changes,
    summary_columns,
    summary_table,
)
from .sweep import (
    budget_curves,
    metric_vs_param,
    pareto_front,
    sweep_pareto,
)
from .trace import (
    IDENTITY,
    IDENTITY_TOLERANCE,
    attribution_maps,
    identity_check,
    identity_deviation,
    layer_choice_text,
    region_traces,
    trace_examples,
    trace_heatmaps,
    trace_means,
    trace_stats_table,
)

__all__ = [
    "BETTER_WORSE",
    "EDIT_SUMMARY_COLUMNS",
    "IDENTITY",
    "IDENTITY_TOLERANCE",
    "KIND_COLORS",
    "LEVEL_COLUMNS",
    "MARKERS",
    "MAX_SUMMARY_COLUMNS",
    "METHOD_COLORS",
    "SAVE_DPI",
    "SUMMARY_COLUMNS",
    "attribution_maps",
    "budget_curves",
    "class_count_table",
    "class_distribution",
    "class_labels",
    "confusion_improvement",
    "confusion_matrices",
    "edit_probabilities",
    "edit_summary_table",
    "eigen_spectra",
    "example_images",
    "fix_vs_regression",
    "identity_check",
    "identity_deviation",
    "layer_choice_text",
    "layer_spectra",
    "level_table",
    "method_colors",
    "metric_vs_param",
    "nullspace_dims",
    "pareto_front",
    "per_class_changes",
    "region_traces",
    "summary_columns",
    "summary_table",
    "sweep_pareto",
    "text_color",
    "trace_examples",
    "trace_heatmaps",
    "trace_means",
    "trace_stats_table",
    "training_curves",
    "update_norms",
]

common._register_saved_png_display()  # in a notebook kernel; a no-op elsewhere
