"""Running a sweep: the shared stages first, then the experiments, through an executor; every
failure recorded; a second process on the same sweep folder refused."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import filelock
import yaml
from tqdm.std import tqdm  # a console bar (tqdm.auto would pick the notebook bar in a kernel)

from .. import execute, methods, paths
from ..runs import RunError, RunFolder, check_not_busy, corrupt_outputs, holder
from .jobs import (
    job_blob,
    longest_first,
    mark_interrupted,
    materialize,
    prep_cost,
    settle,
    write_job,
)
from .plan import Experiment
from .spec import SweepError, searched_params
from .units import unit_jobs


def lock_sweep(sweep_dir: Path) -> filelock.BaseFileLock:
    """The sweep folder's lock (portable: ``filelock``, not ``fcntl``); a second process is refused."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(sweep_dir / ".sweep.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise SweepError(
            f"another process is running the sweep in {sweep_dir}; wait for it, or give another --sweep-dir"
        ) from None
    return lock


def wait_for_writers(folders: Sequence[Path], seconds: float = 30.0, poll: float = 1.0) -> None:
    """Before a (resumed) sweep writes: a folder still held by a live process (the worker of a
    killed sweep, which stops by itself within seconds: ``dispatch.die_with_parent``) is waited
    for up to ``seconds``, then refused with a :class:`SweepError` naming the holders."""
    deadline = time.monotonic() + seconds
    while True:
        busy = [f for f in folders if _busy(Path(f))]
        if not busy:
            return
        if time.monotonic() >= deadline:
            raise SweepError(
                f"{len(busy)} run folder(s) of this sweep are still being written by another "
                f"process: {busy[0]} by {holder(busy[0])}; stop it (or wait), then resume"
            )
        time.sleep(poll)


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _busy(folder: Path) -> bool:
    try:
        check_not_busy(folder)
    except RunError:
        return True
    return False


def preflight(exps: Sequence[Experiment]) -> None:
    """Every experiment's data file, split, error selection and model choices are valid before
    anything is written (once per distinct combination of what the preflight reads). The device
    is the workers' to check (a Ray head node may have no GPU)."""
    seen = set()
    for e in exps:
        p = {**e.params, "device": "auto"}
        key = json.dumps({k: p.get(k) for k in execute.PREFLIGHT_KEYS}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            execute.preflight(p, log=lambda *a: None)


def experiment_blob(e: Experiment, sweep_dir: Path, spec: dict, wandb_cfg) -> dict:
    return job_blob(
        "experiment",
        e.folder(sweep_dir),
        e.params,
        e.notebooks,
        inherit=methods.get(e.method).inherits,
        prep_dir=str(e.prep.folder(sweep_dir)),
        method=e.method,
        name=e.name,
        id=e.id,
        config_id=e.config_id,
        index=e.index,
        point=e.point,
        crossfit_of=e.crossfit_of,
        sweep=spec["name"],
        searched=searched_params(spec),
        wandb=wandb_cfg,
    )


def _run_preps(
    spec: dict, preps: dict, sweep_dir: Path, executor, log, progress: bool
) -> dict[str, str]:
    """Run the shared stages not yet done; return the failed ones' first errors."""
    todo = [pr for pr in preps.values() if not RunFolder(pr.folder(sweep_dir)).all_ok(pr.notebooks)]
    failed: dict[str, str] = {}
    if not todo:
        return failed
    files = {
        str(
            write_job(
                pr.folder(sweep_dir),
                job_blob(
                    "prep",
                    pr.folder(sweep_dir),
                    pr.params,
                    pr.notebooks,
                    name=pr.name,
                    sweep=spec["name"],
                ),
            )
        ): pr
        for pr in longest_first(todo, lambda pr: prep_cost(pr.params))
    }
    log(f"shared stages: {len(todo)} to run ({len(preps) - len(todo)} done)")
    for res in tqdm(
        executor.map(files), total=len(files), desc="shared stages", disable=not progress
    ):
        pr = files[res.job]
        folder = pr.folder(sweep_dir)
        settle(folder, pr.notebooks, res)
        if not RunFolder(folder).all_ok(pr.notebooks):
            failed[pr.id] = RunFolder(folder).first_error()
    return failed


def _prepare(
    e: Experiment, sweep_dir: Path, spec: dict, wandb_cfg, failed_preps: dict
) -> Path | None:
    """The experiment's job file, its folder started from the shared stages; None (and a recorded
    failure) when it cannot start."""
    folder = e.folder(sweep_dir)
    run = RunFolder(folder)
    blob = experiment_blob(e, sweep_dir, spec, wandb_cfg)
    if e.prep.id in failed_preps:
        folder.mkdir(parents=True, exist_ok=True)
        run.write_params(e.params)
        write_job(folder, blob)
        run.set_status(
            "sweep",
            "failed",
            error=f"shared stages failed: {failed_preps[e.prep.id]} "
            f"(see {os.path.relpath(e.prep.folder(sweep_dir), folder)}/index.html)",
        )
        return None
    try:  # the experiment's folder starts from its shared stages' outputs (here: no import cost in the job)
        if not run.all_ok(blob["inherit"]):
            materialize(folder, e.prep.folder(sweep_dir), e.params, blob["inherit"])
    except Exception as err:
        write_job(folder, blob)
        run.set_status("sweep", "failed", error=f"could not start from the shared stages: {err}")
        return None
    return write_job(folder, blob)


def run_sweep(
    spec: dict,
    exps: Sequence[Experiment],
    sweep_dir: Path,
    executor,
    wandb_cfg: dict | None = None,
    log=print,
    progress: bool = True,
) -> dict:
    """Run the shared stages, then the experiments; record every failure; log the invocation."""
    lock = lock_sweep(sweep_dir)
    t0, started, load_before = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S"), _load()
    preps = {e.prep.id: e.prep for e in exps}
    try:  # a killed sweep's workers: waited for, or refused, before anything is written
        wait_for_writers(
            [pr.folder(sweep_dir) for pr in preps.values()] + [e.folder(sweep_dir) for e in exps]
        )
    except SweepError:
        lock.release()
        raise
    per_experiment = executor.timeout  # --timeout: a unit gets it once per experiment
    try:
        paths.atomic_write_text(
            sweep_dir / "sweep.yaml", yaml.safe_dump(dict(spec), sort_keys=False)
        )
        counts = {"ok": 0, "failed": 0, "skipped_done": 0}
        failed_preps = _run_preps(spec, preps, sweep_dir, executor, log, progress)
        counts["shared_seconds"] = round(time.perf_counter() - t0, 1)
        files = {}
        for e in exps:
            done = RunFolder(e.folder(sweep_dir))
            corrupt = corrupt_outputs(e.folder(sweep_dir)) if done.all_ok(e.notebooks) else []
            for name in e.notebooks if corrupt else []:  # redone: its outputs are unreadable
                done.set_status(name, "stale", reason="; ".join(corrupt))
            if done.all_ok(e.notebooks):
                counts["skipped_done"] += 1
                continue
            job = _prepare(e, sweep_dir, spec, wandb_cfg, failed_preps)
            if job is None:
                counts["failed"] += 1
            else:
                files[str(job)] = e
        log(
            f"experiments: {len(files)} to run, {counts['skipped_done']} already done"
            + (f", {counts['failed']} could not start" if counts["failed"] else "")
            + (" (in process, one job per dataset and seed)" if spec.get("in_process") else "")
        )
        units = unit_jobs(files, sweep_dir) if spec.get("in_process") else {f: [f] for f in files}
        if spec.get("in_process") and units and per_experiment:  # --timeout is per experiment
            executor.timeout = per_experiment * max(len(jobs) for jobs in units.values())
        for res in tqdm(
            executor.map(units), total=len(units), desc="experiments", disable=not progress
        ):
            for f in units[res.job]:
                e = files[f]
                settle(e.folder(sweep_dir), e.notebooks, res, alone=len(units[res.job]) == 1)
                run = RunFolder(e.folder(sweep_dir))
                ok = run.all_ok(e.notebooks)
                counts["ok" if ok else "failed"] += 1
                if not ok:
                    log(f"failed: {e.name}: {run.first_error()}")
    except (
        KeyboardInterrupt
    ):  # killed: what finished stays; what was running is marked, and redone on rerun
        mark_interrupted(
            [pr.folder(sweep_dir) for pr in preps.values()] + [e.folder(sweep_dir) for e in exps]
        )
        raise
    finally:
        lock.release()
        executor.timeout = per_experiment  # the caller's executor as it was
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    counts["experiments_seconds"] = round(counts["seconds"] - counts.get("shared_seconds", 0), 1)
    log_file = (
        sweep_dir / "sweep_log.json"
    )  # one entry per invocation (a resumed sweep has several)
    history = json.loads(log_file.read_text()) if log_file.is_file() else []
    history.append(
        {
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # what the published benchmark's provenance reads (vitedit.publish)
            "command": shlex.join(["vitedit-sweep", *sys.argv[1:]]),  # or python -m vitedit.sweep
            "datasets": sorted({e.dataset for e in exps}),  # what it planned (publish reads it)
            "commit": paths.git_commit(),
            "cpus": os.cpu_count(),
            "load_before": load_before,  # 1, 5, 15-minute load averages
            "load_after": _load(),
            "executor": getattr(executor, "name", "?"),
            "workers": getattr(executor, "workers", None),
            "experiments": len(exps),
            **counts,
        }
    )
    paths.atomic_write_text(log_file, paths.json_text(history))
    return counts
