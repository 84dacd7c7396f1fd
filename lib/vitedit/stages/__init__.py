"""The steps of notebooks 03-07, one tested function each; the notebooks call them and show the
results::

    ctx = stages.load_context(run)              # data, split, the run's model, its checkpoint
    err = stages.find_errors(ctx)               # 03: the errors, traced by stages.trace(ctx, err)
    sel = stages.select_edits(ctx)              # 04/05/07: the errors to edit, the statistics samples
    out = stages.run_methods(ctx, sel, "04_edit_alphaedit")   # every registered method of 04
    ev = stages.evaluate_edits(ctx)             # 06: the 4-level evaluation of every recorded edit
    bl = stages.run_baselines(ctx, sel)         # 07: the baselines, evaluated the same way

Which methods run is the ``methods`` parameter read against the registry (:mod:`vitedit.methods`);
each method's editor is built from the run's parameters under the same names.

- :mod:`.context` — :class:`Context` (what every stage starts from);
- :mod:`.locate` — notebook 03; :mod:`.edit` — 04 and 05; :mod:`.evaluate` — 06 and 07.
"""

from .context import Context, load_context
from .edit import (
    NON_SETTINGS,
    OUTPUTS,
    MethodRuns,
    Selection,
    editor_context,
    run_method,
    run_methods,
    select_edits,
    selected_methods,
    settings,
)
from .evaluate import Evaluations, evaluate_edits, run_baselines
from .locate import Errors, Tracing, attribution_maps, find_errors, hand_over_layers, trace

__all__ = [
    "NON_SETTINGS",
    "OUTPUTS",
    "Context",
    "Errors",
    "Evaluations",
    "MethodRuns",
    "Selection",
    "Tracing",
    "attribution_maps",
    "editor_context",
    "evaluate_edits",
    "find_errors",
    "hand_over_layers",
    "load_context",
    "run_baselines",
    "run_method",
    "run_methods",
    "select_edits",
    "selected_methods",
    "settings",
    "trace",
]
