"""The benchmark's fast path: one process runs all the experiments of a (dataset, seed).

Per experiment, today's path starts a process and two papermill kernels (≈ 14 s of imports and
starts), loads the data and the model, selects the errors with a full pass over Edit-Discovery and
evaluates the edited model with full passes over every set. A *unit* job
(``{"kind": "unit", "jobs": [experiment job files]}``) runs them in one process instead: the data,
split and base model are loaded once per shared stage folder, the errors are selected once per
selection setting, the base model's predictions and pre-logit features come from the prediction
cache, and a layer edit is evaluated from the base model's hidden states at its lowest edited
block (:class:`vitedit.statecache.StateCache`, identical probabilities). Each experiment still
calls the library functions its notebooks call (:data:`STEPS`: ``stages.select_edits``,
``stages.run_methods``, ``stages.evaluate_edits``, ``stages.run_baselines``, and what
``run.finish`` records), so its run folder holds the same records, CSVs and ``metrics.json``; only
the executed notebooks and their HTML pages are missing (``fast_path: true`` in its status): the
chosen configurations are rendered by their notebooks afterwards, with the sweep report
(:func:`render_chosen`). ``tests/test_sweep_run.py`` compares a sweep's summary both ways.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from .. import checkpoints, execute, nb, paths, report, runs, splits, stages, threads
from .. import params as params_mod
from ..runs import JOB_FILE, RunFolder
from ..stages.edit import stats_cache_of
from ..statecache import CachingRunner, StateCache
from . import wandb_log
from .jobs import materialize
from .keys import SELECTION_KEYS
from .spec import SweepError


class Unit:
    """What the experiments of one process share: per shared stage folder the data, the base model
    (loaded once, sha256-checked for every experiment) and its hidden states; per selection
    setting the selected errors."""

    def __init__(self):
        self.bases: dict[str, stages.Context] = {}
        self.selections: dict[tuple, stages.Selection] = {}

    def context(self, run: nb.Run) -> stages.Context:
        """The experiment's context: its own folder and parameters, the shared data and model
        (shared by the experiments with the same checkpoint and the same way of running it)."""
        ref = checkpoints.run_checkpoint_ref(run.dir)
        p = run.params
        key = (ref["sha256"], p["eval_batch_size"], p["device"], p["data_path"], p["dataset"])
        base = self.bases.get(key)
        if base is None:
            base = stages.load_context(run)
            runner = CachingRunner(base.cfg, p["eval_batch_size"], base.device)
            base.states = StateCache(base.model, runner)
            base.stats_cache = stats_cache_of(base)
            self.bases[key] = base
        split = splits.load(run.dir, expect=run.params, data=base.data)
        return dataclasses.replace(base, run_dir=run.dir, params=run.params, split=split)

    def selection(self, ctx: stages.Context) -> stages.Selection:
        key = (ctx.base_ref["sha256"], *(json.dumps(ctx.params[k]) for k in SELECTION_KEYS))
        if key not in self.selections:
            self.selections[key] = stages.select_edits(ctx)
        return self.selections[key]


def _edit(unit: Unit, ctx: stages.Context, run: nb.Run) -> dict:
    sel = unit.selection(ctx)
    out = stages.run_methods(ctx, sel, run.stage)
    return dict(methods=list(out.results), n_edits=int(len(sel.errors)), fix_rate=out.fix_rates())


def _evaluate(unit: Unit, ctx: stages.Context, run: nb.Run) -> dict:
    return dict(methods=list(stages.evaluate_edits(ctx).evals))


def _baselines(unit: Unit, ctx: stages.Context, run: nb.Run) -> dict:
    ev = stages.run_baselines(ctx, unit.selection(ctx))
    return dict(methods=list(ev.evals), skipped=ev.skipped)


# notebook -> its library calls, returning what the notebook's run.finish(...) records
STEPS: dict[str, Callable[[Unit, stages.Context, nb.Run], dict]] = {
    "04_edit_alphaedit": _edit,
    "05_edit_head": _edit,
    "06_evaluate": _evaluate,
    "07_baselines": _baselines,
}


def run_experiment(unit: Unit, job: dict) -> None:
    """One experiment's notebooks, in this process; each recorded as a notebook records it. A
    step's many record files are made durable together when it ends
    (:func:`vitedit.paths.synced_at_end`), before its status says ``ok`` (written with its own
    fsync): an ``ok`` on disk never vouches for files that are not."""
    folder, p = Path(job["folder"]), params_mod.resolve(job["params"])
    run_folder = RunFolder(folder)
    try:
        if not run_folder.all_ok(job["inherit"]):
            materialize(folder, Path(job["prep_dir"]), p, job["inherit"])
    except Exception as e:  # recorded as execute_job records it
        run_folder.set_status("sweep", "failed", error=execute.short_error(e))
        raise
    for name in job["notebooks"]:
        if run_folder.is_ok(name):
            continue
        t0 = time.perf_counter()
        run = nb.Run(name, folder, {**p, "run_dir": str(folder)})
        try:
            with paths.synced_at_end():
                ctx = unit.context(run)
                if name == "07_baselines" and ctx.states is not None:  # no layer edit after
                    ctx.states.clear()
                run.begin()
                extra = STEPS[name](unit, ctx, run)
        except BaseException as e:  # recorded like a notebook's failure, never hidden
            execute.record_failure(
                folder, name, execute.short_error(e), seconds=round(time.perf_counter() - t0, 1)
            )
            raise
        run_folder.set_status(
            name,
            "ok",
            **extra,
            fast_path=True,
            torch_threads=threads.in_use(),
            seconds=round(time.perf_counter() - t0, 2),
            warnings=execute.stage_warnings(folder, name),
        )
    report.write_run_index(folder)


def execute_unit(job_file: str | Path) -> int:
    """Run a unit job (``vitedit-sweep exec``): its experiments in order; a failed one is recorded
    and the others go on. Exit status 1 when any failed."""
    unit_job = json.loads(Path(job_file).read_text())
    unit, rc = Unit(), 0
    first = json.loads(Path(unit_job["jobs"][0]).read_text()) if unit_job["jobs"] else {}
    threads.apply(first.get("params", {}).get("num_threads"))  # before torch does any work
    for f in unit_job["jobs"]:
        job = json.loads(Path(f).read_text())
        folder = Path(job["folder"])
        t0 = time.perf_counter()
        try:
            with runs.writer(folder, f"vitedit-sweep exec {job_file}"):  # one writer per folder
                RunFolder(folder).clear_status("sweep")
                run_experiment(unit, job)
        except runs.RunError as e:  # another process writes this folder: nothing written here
            print(f"error: {job['name']}: {e}", file=sys.stderr)
            rc = 1
            continue
        except Exception as e:
            print(f"error: {job['name']}: {execute.short_error(e)}", file=sys.stderr)
            rc = 1
        seconds = round(time.perf_counter() - t0, 2)
        timing = {"job_seconds": seconds, "cells_seconds": seconds, "setup_cells_seconds": 0.0}
        timing.update(overhead_seconds=0.0, in_process=True)  # no process, no kernel of its own
        paths.atomic_write_text(folder / "timing.json", paths.json_text(timing))
        if job.get("wandb"):
            wandb_log.log_experiment(job, folder)
    return rc


def render_chosen(sweep_dir: Path, summary: pd.DataFrame, log=print, workers: int = 1) -> list[str]:
    """Each chosen configuration of an in-process sweep (``selection.csv``: one per dataset and
    method) run again through its notebooks at its first seed, for its HTML report (the other
    points and seeds keep their records and run index only), ``workers`` at a time (the sweep's
    own workers: each notebook runs at the point's ``num_threads``). Each notebook recomputes its
    edit, so this also checks the fast path: a figure that differs between the two paths is an
    error (:class:`SweepError`: the fast path is then wrong). A point whose notebooks fail is
    recorded failed by them and returned as a warning; the others are rendered."""
    chosen = summary[summary.selected.astype(bool)].sort_values("seed")
    todo = []
    for row in chosen.drop_duplicates("config_id").itertuples():  # a config_id spans the seeds
        folder = Path(row.run_dir)
        job = json.loads((folder / JOB_FILE).read_text())
        status = RunFolder(folder).status()
        if any(status.get(n, {}).get("fast_path") for n in job["notebooks"]):
            todo.append((folder, job))  # not rendered yet

    def render(item) -> tuple[str | None, str | None]:  # (a problem, a difference)
        folder, job = item
        fast = _metrics(folder)
        try:
            for name in job["notebooks"]:
                execute.run_notebook(name, folder, job["params"], log=lambda *a: None)
        except Exception as e:
            return f"{job['name']}: its notebooks failed ({execute.short_error(e)})", None
        rendered = _metrics(folder)
        keys = sorted(k for k in fast.keys() | rendered.keys() if fast.get(k) != rendered.get(k))
        log(f"rendered {job['name']}: {folder / 'index.html'}")
        return None, (f"{job['name']} ({', '.join(keys[:5])})" if keys else None)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # each render is its own kernel process
        results = list(pool.map(render, todo))
    problems = [p for p, _ in results if p]
    differ = [d for _, d in results if d]
    if differ:
        raise SweepError(
            "the notebooks computed other figures than the in-process path for "
            + "; ".join(differ)
            + ": the fast path is wrong here; rerun the sweep without in_process"
        )
    return problems


def _metrics(folder: Path) -> dict:
    """Every method's figures in ``metrics.json``, timings left out (they differ between runs), and
    how a result was had (``reused_checkpoint``: the render reuses the retrain the fast path
    trained) left out too."""
    f = folder / "metrics.json"
    methods = json.loads(f.read_text())["methods"] if f.is_file() else {}
    return {  # JSON text: NaN equals NaN
        f"{m}.{k}": json.dumps(v)
        for m, row in methods.items()
        for k, v in row.items()
        if "seconds" not in k and "time" not in k and k not in NOT_FIGURES
    }


NOT_FIGURES = frozenset({"reused_checkpoint"})
