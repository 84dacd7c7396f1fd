"""The model editors, a module per family (compare ROME's per-method packages):

- :mod:`.alphaedit` — AlphaEdit (Fang et al., ICLR 2025) and its P = I ablation;
- :mod:`.memit` — MEMIT (Meng et al., ICLR 2023);
- :mod:`.head_gradient`, :mod:`.head_closed_form`, :mod:`.head_nullspace`, :mod:`.head_guarded` —
  the classifier-head editors, each a :class:`.head.HeadEditor` that implements only its solve;

and the pieces they share: :mod:`.base` (the editors' input, output and interface), :mod:`.layer`
(the layer editors' batch loop), :mod:`.statistics` (key statistics and their cache), :mod:`.solve`
(the closed-form solves), :mod:`.preservation` (‖ΔW k‖ / ‖W k‖), and :mod:`.records` (what notebooks
04/05 keep in a run folder).

Editors are declared once, in the method registry (:mod:`vitedit.methods`), and built from a run's
parameters; the schema (:mod:`vitedit.params`) is the only source of their settings::

    from vitedit import editors
    ed = editors.build("alphaedit", layers=[9, 10, 11], L2=0.5)   # the rest: schema defaults
    result = ed.edit(model, runner, edit_data)
"""

from __future__ import annotations

from typing import Any

from .. import methods
from .. import params as params_mod
from .alphaedit import AlphaEdit
from .base import (
    HELDOUT_MIN_SHARE,
    LOG_COLUMNS,
    EditData,
    EditError,
    Editor,
    EditResult,
    edit_data,
    stats_positions,
)
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .head_closed_form import HeadClosedFormEditor
from .head_gradient import HeadGradientEditor
from .head_guarded import HeadGuardedEditor
from .head_nullspace import HeadNullspaceEditor
from .layer import LayerEditor
from .memit import MEMIT
from .statistics import StatsCache

__all__ = [
    "HELDOUT_MIN_SHARE",
    "LOG_COLUMNS",
    "MEMIT",
    "AlphaEdit",
    "EditData",
    "EditError",
    "EditResult",
    "Editor",
    "HeadClosedFormEditor",
    "HeadEditor",
    "HeadFeatures",
    "HeadGradientEditor",
    "HeadGuardedEditor",
    "HeadNullspaceEditor",
    "HeadUpdate",
    "LayerEditor",
    "StatsCache",
    "build",
    "edit_data",
    "stats_positions",
]


def build(name: str, run_params: dict[str, Any] | None = None, /, **given: Any) -> Editor:
    """The registered method ``name``'s editor, as a run builds it: its settings from the schema's
    defaults, then ``run_params``, then the schema keys in ``given`` (validated like a run's); the
    method's context arguments (``layers``, ``stats_cache``, ``params``, ...) from ``given``."""
    m = methods.get(name)
    context = {k: v for k, v in given.items() if k in m.context}  # others: another method's
    overrides = {k: v for k, v in given.items() if k not in methods.CONTEXT_ARGS}
    p = params_mod.resolve(run_params or {}, overrides)
    if "stats_cache" in m.context:
        context.setdefault("stats_cache", None)
    if "params" in m.context:  # the resolved parameters themselves, unless a run's are given
        context.setdefault("params", p)
    return m.build(p, **context)
