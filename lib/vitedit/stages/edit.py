"""Notebooks 04 and 05: which errors are edited, and every selected method run and recorded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .. import evaluation, methods, paths, selection
from ..editors import records
from ..editors.base import LOG_COLUMNS, EditData, EditResult, edit_data, stats_positions
from ..editors.statistics import StatsCache
from .context import Context

NON_SETTINGS = ("eval_batch_size", "progress")  # editor arguments that do not change an edit
OUTPUTS = {
    "04_edit_alphaedit": ("edit_summary.csv", "edit_log.csv"),  # per-method summary, per-sample log
    "05_edit_head": ("head_edit_summary.csv", "head_edit_log.csv"),
}


@dataclass
class Selection:
    """The Edit-Discovery errors to edit (the first ``max_edits`` in set order, the next
    ``max_edits`` (``second``), or one confusion pair's) and the FT-Train samples that build the
    editing statistics (``projection_samples``);
    the rest of FT-Train is held out for the evaluation."""

    labels: np.ndarray  # Edit-Discovery true labels
    pred: np.ndarray  # the model's predictions on Edit-Discovery
    errors: np.ndarray  # positions (in Edit-Discovery) of the errors to edit
    stats_positions: np.ndarray  # positions (in FT-Train) of the statistics samples
    edit_set: EditData
    n_ft_train: int
    pair: tuple[int, int] | None = None  # edit_selection: pair
    label_names: list[str] | None = None

    @property
    def message(self) -> str:
        which = ""
        if self.pair is not None:
            names = self.label_names or [str(i) for i in range(max(self.pair) + 1)]
            which = f" of the pair true '{names[self.pair[0]]}' predicted '{names[self.pair[1]]}'"
        msg = (
            f"editing {len(self.errors)}{which} of {int((self.labels != self.pred).sum())} "
            f"Edit-Discovery errors; "
            f"statistics from {len(self.stats_positions)} FT-Train samples, "
            f"{self.n_ft_train - len(self.stats_positions)} held out"
        )
        if len(self.errors) == 0:
            msg += "\nNo errors to edit: every editor returns the model unchanged."
        return msg


def select_edits(ctx: Context) -> Selection:
    p = ctx.params
    ev = ctx.evaluator  # through the prediction cache: the base pass is made once per checkpoint
    y = ev.labels("edit_discovery")
    pred = ev.probs(ctx.model, ev.view("edit_discovery")).argmax(1)
    pair = None
    if p["edit_selection"] == "pair":
        errors, pair = selection.select_pair_errors(
            y, pred, p["max_edits"], p["edit_pair"], ctx.data.info.n_classes
        )
    else:
        errors = selection.select_errors(y, pred, p["max_edits"], selection.skipped_errors(p))
    n_ft = len(ctx.split.indices["ft_train"])
    pos = stats_positions(n_ft, p["projection_samples"], p["seed"])
    return Selection(
        labels=y,
        pred=pred,
        errors=errors,
        stats_positions=pos,
        # every Edit-Discovery sample not edited (the anchors): head_anchored and head_refit keep
        # them at the model's own decisions; their labels reach only a method that declares
        # reads_anchor_labels (head_dfr; run_method drops them for the others)
        edit_set=edit_data(
            ctx.data,
            ctx.split,
            pos,
            errors,
            anchor_positions=np.setdiff1d(np.arange(len(y)), errors),
        ),
        n_ft_train=n_ft,
        pair=pair,
        label_names=list(ctx.data.info.label_names),
    )


def selected_methods(p: dict, notebook: str) -> list[methods.Method]:
    """The registered methods of ``notebook`` that the ``methods`` parameter asks for (None: every
    registered method of it)."""
    wanted = p["methods"]
    return [methods.get(n) for n in methods.names(notebook) if wanted is None or n in wanted]


def stats_cache_of(ctx: Context) -> StatsCache:
    """The key statistics cache of the run's checkpoint (``<checkpoint_dir>/stats``): the
    context's own when it has one (the in-process path's, shared by all its edits), else a new one."""
    return ctx.stats_cache or StatsCache(
        paths.resolve(ctx.params["checkpoint_dir"]) / "stats",
        {"checkpoint": ctx.base_ref["sha256"]},
    )


def editor_context(method: methods.Method, ctx: Context) -> dict[str, Any]:
    """The non-parameter arguments ``method``'s editor takes (:data:`vitedit.methods.CONTEXT_ARGS`)."""
    available = {
        "layers": lambda: ctx.edit_layers()["layers"],
        "stats_cache": lambda: stats_cache_of(ctx),
        "params": lambda: ctx.params,
        "data": lambda: ctx.data,
        "split": lambda: ctx.split,
    }
    return {name: available[name]() for name in method.context}


def settings(method: methods.Method, p: dict, context: dict) -> dict:
    """What determined an edit (recorded beside it and hashed into the edited checkpoint's name)."""
    out = {k: p[k] for k in (*methods.SHARED_KEYS, *method.params, "seed") if k not in NON_SETTINGS}
    if "layers" in context:
        out["layers"] = context["layers"]
    return out


def run_method(ctx: Context, method: methods.Method, sel: Selection) -> tuple[EditResult, dict]:
    """One method built from the run's parameters and run on the selected errors; its result and
    the settings that determined it."""
    context = editor_context(method, ctx)
    editor = method.build(ctx.params, **context)
    data = sel.edit_set  # the anchors' true labels only for a method that reads them (head_dfr)
    if not method.reads_anchor_labels:
        data = replace(data, anchor_labels=None)
    return editor.edit(ctx.model, ctx.runner, data), settings(method, ctx.params, context)


@dataclass
class MethodRuns:
    results: dict[str, EditResult] = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> pd.DataFrame:
        """Every method's per-sample log in one table (``method`` column)."""
        frames = [r.log.assign(method=m) for m, r in self.results.items()]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=[*LOG_COLUMNS, "method"])
        )

    def fix_rates(self) -> dict[str, float | None]:
        return {
            m: float(r.log["fixed"].mean()) if len(r.log) else None for m, r in self.results.items()
        }


def run_methods(ctx: Context, sel: Selection, notebook: str) -> MethodRuns:
    """Build, run and record every selected method of an edit notebook (04, 05): the edited
    checkpoint and ``edits/<method>.json`` in the run folder, and a summary row per method (fix
    rate, held-out and in-sample FT-Train stability)."""
    out = MethodRuns()
    rows = []
    for method in selected_methods(ctx.params, notebook):
        res, used = run_method(ctx, method, sel)
        out.results[method.name] = res
        records.record(ctx.run_dir, res, ctx.base_ref, used, sel.edit_set)
        rows.append(
            evaluation.edit_summary(ctx.evaluator, method.name, res, ctx.model, sel.stats_positions)
        )
    out.summary = pd.DataFrame(rows)
    summary_file, log_file = OUTPUTS[notebook]
    out.summary.to_csv(ctx.run_dir / summary_file, index=False)
    out.log.to_csv(ctx.run_dir / log_file, index=False)
    return out
