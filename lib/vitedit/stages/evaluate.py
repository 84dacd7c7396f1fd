"""Notebooks 06 and 07: the 4-level evaluation of every recorded edit, and the baselines run and
evaluated the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from .. import baselines, comparison, evaluation, methods, runs
from ..editors import records
from ..editors.base import EditError
from .context import Context
from .edit import Selection, run_method, selected_methods


@dataclass
class Evaluations:
    evals: dict[str, dict] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics.values())

    def level(self, name: str) -> pd.DataFrame:
        return pd.DataFrame([ev["levels"][name] for ev in self.evals.values()])

    @property
    def per_class(self) -> pd.DataFrame:
        frames = [ev["per_class"] for ev in self.evals.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write(ctx: Context, out: Evaluations) -> None:
    if out.evals:
        comparison.write_comparison(
            ctx.run_dir,
            out.evals,
            out.metrics,
            {"dataset": ctx.params["dataset"], "seed": ctx.params["seed"]},
        )


def evaluate_edits(ctx: Context) -> Evaluations:
    """Notebook 06: the same 4-level evaluation of every edited model recorded in ``edits/``,
    against exactly the checkpoint it started from (sha256 checked); writes the comparative CSVs
    and ``metrics.json``. The edits of a notebook recorded stale or failed in the run (an earlier
    stage ran again since) are not evaluated: ``skipped`` says why."""
    out = Evaluations()
    folder = runs.RunFolder(ctx.run_dir)
    ev = ctx.evaluator
    for name, rec in records.list_edits(ctx.run_dir, kinds=methods.names(baselines=False)).items():
        notebook = methods.get(name).notebook
        state = folder.stage(notebook).get("status")
        if state in ("stale", "failed"):
            out.skipped[name] = (
                f"{notebook} is {state}: its edits are not evaluated; rerun {notebook}"
            )
            continue
        t0 = time.perf_counter()
        edited, rec = records.load_edited(ctx.run_dir, name, ctx.device)
        if rec["base_sha256"] != ctx.base_ref["sha256"]:
            raise EditError(
                f"{name} was edited from another checkpoint than this run's; rerun its notebook"
            )
        out.evals[name] = evaluation.four_level(
            ev, name, ctx.model, edited, rec["edited_positions"], rec["stats_positions"]
        )
        info = rec["info"]
        spent = (
            (info.get("edit_seconds") or 0)
            + (info.get("stats_seconds") or 0)
            + time.perf_counter()
            - t0
        )
        out.metrics[name] = comparison.summary_metrics(
            out.evals[name], info.get("edit_seconds"), spent, info
        )
    comparison.forget_methods(ctx.run_dir, out.skipped)  # no stale row stays in the comparison
    _write(ctx, out)
    if out.evals:
        out.per_class.to_csv(ctx.run_dir / "per_class_test_accuracy.csv", index=False)
    return out


def run_baselines(ctx: Context, sel: Selection) -> Evaluations:
    """Notebook 07: every selected baseline through the editor interface, recorded, and evaluated
    like the edit methods; a baseline with nothing to train on is recorded as skipped."""
    out = Evaluations()
    for method in selected_methods(ctx.params, methods.BASELINE_NOTEBOOK):
        t0 = time.perf_counter()
        res, used = run_method(ctx, method, sel)
        if res.info.get("status") == "skipped":
            out.skipped[method.name] = res.info["reason"]
            records.record_skipped(ctx.run_dir, method.name, res.info["reason"])
            baselines.write_summary(ctx.run_dir, method.name, reason=res.info["reason"])
            continue
        records.record(ctx.run_dir, res, ctx.base_ref, used, sel.edit_set)
        out.evals[method.name] = evaluation.four_level(
            ctx.evaluator, method.name, ctx.model, res.model, sel.errors, sel.stats_positions
        )
        out.metrics[method.name] = comparison.summary_metrics(
            out.evals[method.name], res.info["edit_seconds"], time.perf_counter() - t0, res.info
        )
        baselines.write_summary(ctx.run_dir, method.name, out.metrics[method.name])
    _write(ctx, out)
    return out
