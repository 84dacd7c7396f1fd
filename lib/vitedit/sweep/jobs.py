"""One job of a sweep, in its own process (``python -m vitedit.sweep exec <job.json>``): a shared
stage folder's notebooks, or one experiment's; and how its end is recorded (:func:`settle`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

from .. import execute, paths, report, runs
from ..runs import JOB_FILE, RunFolder
from . import wandb_log

PREP_FILES = {
    "01_split": ["split_indices.npz", "split_meta.json", "data_split_info.csv"],
    "02_train": ["checkpoint.json", "training_metrics.csv", "set_accuracy.csv"],
    "03_locate": ["layer_importance.csv", "layer_statistics.csv", "locate_summary.json"],
}


def longest_first(items: Sequence, cost) -> list:
    """``items`` with the costliest first (a stable sort: equal costs keep their order), so the
    long jobs start while every worker still has work and no long job runs alone at the end
    (longest-processing-time-first scheduling: a training or an OrganAMNIST unit last on 2 cores
    would leave one core idle for its whole length)."""
    return sorted(items, key=lambda it: -cost(it))


def prep_cost(params: Mapping[str, Any]) -> int:
    """A shared stage folder's expected cost: training images x epochs (its tracing grows with
    the same data), read from the data file's header; 0 when the file is not at hand."""
    from ..datasets import medmnist_files  # lazy: only a sweep's scheduler reads file headers

    try:
        f = medmnist_files.locate_medmnist(params["dataset"], params["size"], params["data_path"])
        n = medmnist_files._npz_headers(f).get("train_images", ((0,),))[0][0]
    except Exception:  # a liver set, a missing file: no estimate, the order is kept
        return 0
    return int(n) * int(params.get("epochs") or 1)


def unit_cost(prep_folder: Path, n_jobs: int) -> int:
    """An in-process unit's expected cost: its experiments x the images of its split."""
    meta = prep_folder / "split_meta.json"
    sizes = json.loads(meta.read_text()).get("sizes", {}) if meta.is_file() else {}
    return n_jobs * sum(sizes.values())


def job_blob(kind: str, folder: Path, params: dict, notebooks: list[str], **extra) -> dict:
    return {
        "kind": kind,
        "folder": str(folder),
        "params": {**params, "run_dir": str(folder)},
        "notebooks": notebooks,
        **extra,
    }


def write_job(folder: Path, blob: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / JOB_FILE
    paths.atomic_write_text(f, paths.json_text(blob))
    return f


def materialize(folder: Path, prep_dir: Path, p: Mapping[str, Any], stages: Sequence[str]) -> None:
    """Start an experiment's run folder from its shared stages: their outputs are copied (small
    files), their status entries point to the shared reports, and the edit layers are chosen here
    from the shared tracing result with this experiment's layer parameters."""
    prep = RunFolder(prep_dir)
    missing = prep.not_ok(stages)
    if missing:
        raise RuntimeError(f"shared stage {missing[0]} in {prep_dir} is not complete")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    for stage in stages:
        for name in PREP_FILES[stage]:
            if (prep_dir / name).is_file():
                shutil.copy2(prep_dir / name, folder / name)
    run = RunFolder(folder)
    run.write_params(p)
    extra: dict[str, dict] = {stage: {} for stage in stages}
    if "03_locate" in stages:
        extra["03_locate"] = {"edit_layers": choose_layers(folder, p)}
    pst = prep.status()
    for stage in stages:
        entry = {k: v for k, v in pst[stage].items() if k not in ("status", "time")}
        if entry.get("html"):
            entry["html"] = os.path.relpath(prep_dir / entry["html"], folder)
        run.set_status(
            stage,
            "ok",
            **{**entry, **extra[stage], "reused_from": os.path.relpath(prep_dir, folder)},
        )


def choose_layers(folder: Path, p: Mapping[str, Any]) -> list[int]:
    """The edit layers of an experiment from the shared tracing result (``edit_layers.json``)."""
    # lazy: locate imports torch (about 2.5 s); materialize runs in the sweep's own process
    from .. import locate, models

    stats_file = folder / "layer_statistics.csv"
    stats = pd.read_csv(stats_file) if stats_file.stat().st_size > 1 else pd.DataFrame()
    n_layers = json.loads((folder / "locate_summary.json").read_text()).get(
        "n_layers"
    ) or models.depth(p["model"])
    choice = locate.edit_layers_from(stats, n_layers, p, folder)
    return choice["layers"]


def execute_job(job_file: str | Path) -> int:
    """Run one job (``vitedit-sweep exec``): a prep's notebooks, or an experiment's."""
    job_file = Path(job_file)
    job = json.loads(job_file.read_text())
    folder = Path(job["folder"])
    run = RunFolder(folder)
    p = job["params"]
    t0 = time.perf_counter()
    run.clear_status("sweep")
    try:
        if job["kind"] == "experiment" and not run.all_ok(job["inherit"]):
            materialize(folder, Path(job["prep_dir"]), p, job["inherit"])
        elif run.params is None:
            folder.mkdir(parents=True, exist_ok=True)
            run.write_params(p)
        for name in job["notebooks"]:  # checked one by one: running one marks the later ones stale
            if not run.is_ok(name):
                execute.run_notebook(name, folder, p)
        rc = 0
    except BaseException as e:  # recorded (a notebook's own failure already is), never hidden
        if not run.has_failure():
            run.set_status("sweep", "failed", error=execute.short_error(e))
        print(f"error: {execute.short_error(e)}", file=sys.stderr)
        rc = 1
    report.write_run_index(folder)
    write_timing(folder, job, time.perf_counter() - t0)
    if job.get("wandb") and job["kind"] == "experiment":
        wandb_log.log_experiment(job, folder)
    return rc


def notebook_cell_seconds(nb_file: Path) -> dict:
    """Seconds papermill measured per notebook: the whole execution and the sum of its cells."""
    if not nb_file.is_file():
        return {}
    nb = nbformat.read(nb_file, as_version=4)
    cells = [c.metadata.get("papermill", {}).get("duration") or 0.0 for c in nb.cells]
    setup = [
        c.metadata.get("papermill", {}).get("duration") or 0.0
        for c in nb.cells
        if c.cell_type == "code" and "nb.start(" in c.source
    ]
    return {
        "papermill_seconds": nb.metadata.get("papermill", {}).get("duration"),
        "cells_seconds": float(sum(cells)),
        "setup_cell_seconds": float(setup[0]) if setup else 0.0,
    }


def write_timing(folder: Path, job: dict, seconds: float) -> None:
    per = {n: notebook_cell_seconds(folder / "notebooks" / f"{n}.ipynb") for n in job["notebooks"]}
    cells = sum(v.get("cells_seconds", 0.0) for v in per.values())
    setup = sum(v.get("setup_cell_seconds", 0.0) for v in per.values())
    blob = {
        "job_seconds": round(seconds, 2),
        "cells_seconds": round(cells, 2),
        "setup_cells_seconds": round(setup, 2),
        "overhead_seconds": round(seconds - cells, 2),
        "notebooks": per,
    }
    paths.atomic_write_text(folder / "timing.json", paths.json_text(blob))


def settle(folder: Path, notebooks: Sequence[str], result, alone: bool = True) -> None:
    """After a job ended: a timeout or a dead worker becomes a recorded failure with its error and
    the notebook that was running; nothing is left 'running'. ``alone``: the job ran this
    experiment only (not a unit of several), so its wall time is the experiment's. A folder another
    process still writes (a job refused by its lock) is left to that process."""
    try:
        runs.check_not_busy(folder)
    except runs.RunError as e:
        print(f"not settled: {e}", file=sys.stderr)
        return
    timing = folder / "timing.json"
    if (
        timing.is_file() and alone
    ):  # the wall time as the sweep saw it (process start and imports included)
        t = json.loads(timing.read_text())
        t["wall_seconds"] = result.seconds
        paths.atomic_write_text(timing, paths.json_text(t))
    run = RunFolder(folder)
    if run.all_ok(notebooks) and (result.ok or not alone):  # a unit's other experiment failed
        return
    why = (
        f"timeout after {result.seconds:.0f} s (--timeout)"
        if result.timed_out
        else f"worker exited with code {result.returncode}"
    )
    for stage in run.running():
        execute.record_failure(folder, stage, why)
    if not run.has_failure():
        run.set_status(
            "sweep", "failed", error=f"{why}: {result.output_tail[-400:]}", log="job.log"
        )
    report.write_run_index(folder)


def mark_interrupted(folders: Sequence[Path]) -> None:
    """A killed sweep: what was running is recorded as failed (and redone on rerun)."""
    for folder in folders:
        run = runs.RunFolder(folder)
        for stage in run.running():
            run.set_status(stage, "failed", error="interrupted: the sweep was killed")
