"""Executing the study's notebooks: checks before a run folder exists, papermill, the outcome.

The CLI (:mod:`vitedit.cli`) and the sweep's jobs (:mod:`vitedit.sweep.jobs`) both run notebooks
through :func:`run_notebook`, so a notebook's success or failure is recorded one way everywhere:
only a notebook that reached ``run.finish()`` is ``ok``; a failure is recorded with its error and
its partial report (:func:`record_failure`).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import datasets, methods, nb, paths, report, runs, selection, splits, threads
from . import params as params_mod
from . import progress as progress_mod

KERNEL = "python3"


def notebook_path(name: str) -> Path:
    return paths.project_root() / "notebooks" / f"{name}.ipynb"


def notebook_parameters(name: str) -> list[str]:
    """Names assigned in the notebook's cell tagged 'parameters'."""
    # lazy: papermill costs ~2.5 s to import; `--help`, `--dry-run` and refused parameters answer
    # without it (the CLI went from 0.2 s to 2.6 s to start with it at the top)
    import papermill as pm

    return list(pm.inspect_notebook(str(notebook_path(name))))


# what to do when the run folder cannot be written (errno -> the fix)
DISK_FIXES = {
    errno.EROFS: "the folder is on a read-only file system; give a writable --runs-dir",
    errno.EACCES: "permission denied; give a --runs-dir you can write to",
    errno.ENOSPC: "the disk is full; free some space (or give --runs-dir on another disk) and "
    "rerun the same command to resume",
    errno.EDQUOT: "the disk quota is exceeded; free some space and rerun the same command",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter --run-name or --runs-dir",
    errno.ENOTDIR: "a part of the path is a file, not a folder; give a folder",
}
DISK_ERRNO = re.compile(r"\[Errno (\d+)\]")  # an OSError raised inside a notebook kernel


def disk_error(e: BaseException, run_dir: Path) -> str:
    """One line for an ``OSError`` while writing a run (in this process, or inside a notebook's
    kernel: papermill's error then carries ``[Errno N]``): what could not be written and the fix;
    other errors as a failed stage."""
    code = getattr(e, "errno", None) if isinstance(e, OSError) else None
    if code is None:
        found = DISK_ERRNO.search(str(getattr(e, "evalue", "")))
        code = int(found.group(1)) if found else None
    fix = DISK_FIXES.get(code)
    if fix is None:
        index = Path(run_dir) / "index.html"
        return f"stage failed: {short_error(e)}" + (f"\nsee {index}" if index.is_file() else "")
    where = getattr(e, "filename", None) or run_dir
    return f"cannot write {where}: {os.strerror(code)}; {fix}"


def short_error(e: BaseException) -> str:
    """``Name: message`` of an exception (papermill's cell errors carry the notebook's own)."""
    name = getattr(e, "ename", type(e).__name__)
    value = getattr(e, "evalue", str(e))
    return f"{name}: {value}"[:500]


# what :func:`preflight` reads (a sweep checks each distinct combination once)
PREFLIGHT_KEYS = (
    "dataset",
    "size",
    "data_path",
    "download",
    "verify_md5",
    "liver_split_seed",
    "ft_train_ratio",
    "seed",
    "edit_selection",
    "edit_pair",
    "model",
    "trace_kinds",
    "trace_scopes",
    "edit_layers",
    "trace_regions",
    "device",
    "checkpoint_dir",
)


def _check_model(p: dict) -> None:
    # lazy: locate and models import torch and timm (about 5 s on 2 cores); `vitedit --help` and
    # parameter and data errors answer without them
    from . import locate, models

    n_layers = models.depth(p["model"])
    locate.check_choices(p["trace_kinds"], p["trace_scopes"], n_layers, p["edit_layers"] or [])
    side = models.grid_side(p["model"])
    if p["trace_regions"] and not 1 <= p["trace_regions"] <= side:
        raise locate.LocateError(
            f"trace_regions {p['trace_regions']} must be between 1 and the patch grid's side "
            f"({side} for {p['model']}), or 0 (off)"
        )
    models.resolve_device(p["device"])  # cuda asked for on a machine without it
    folder = paths.resolve(p["checkpoint_dir"])
    for f in (folder, *folder.parents):  # the first that exists must be a folder
        if f.exists():
            if not f.is_dir():
                raise params_mod.ParamError(
                    f"checkpoint_dir {folder}: {f} is a file, not a folder; give a folder for "
                    "the checkpoints"
                )
            break


def _check_data(p: dict, data: datasets.Data) -> None:
    """What the data decides before anything runs: the 4 sets are not empty, an ``edit_pair``
    names two classes of this dataset."""
    splits.make_split(data, p["ft_train_ratio"], p["seed"])
    if p.get("edit_pair") is not None and p.get("edit_selection") == "pair":
        selection.check_pair(p["edit_pair"], data.info.n_classes)


def preflight(p: dict, log=print) -> None:
    """Everything that can be checked before a run folder exists: the data file (existence, MD5,
    labels, classes, the 4 sets' sizes, ``edit_pair``), the model config's layers and patch grid
    against the tracing choices, and the device. The data comes first (numpy only: its errors
    answer in a second), unless it may be downloaded: nothing is fetched for a run whose model
    settings are refused."""
    info = datasets.dataset_info(p["dataset"])  # a name: nothing to fetch
    fetch = p["download"] and info.source != "liver"  # liver data is never downloaded
    if fetch:
        _check_model(p)
    if info.source == "liver":
        _check_data(p, datasets.load(p, log=log))
    else:
        path = datasets.locate_medmnist(
            p["dataset"], p["size"], p.get("data_path"), p["download"], log=log
        )
        datasets.check_medmnist_file(path, p["dataset"], p["size"], p["verify_md5"])
        with np.load(path) as f:
            labels = {
                s: datasets.check_labels(f[f"{s}_labels"], info.n_classes, f"{path} '{s}_labels'")
                for s in datasets.SPLITS
            }
        datasets.check_classes(labels, info.label_names, str(path))
        _check_data(p, datasets.Data(info, {}, labels, path, ""))  # labels only: no images read

        if p["download"] and not p.get("data_path"):
            # the notebooks load the file found here, and never download again
            p["data_path"] = str(path)
    if not fetch:
        _check_model(p)


def papermill(
    src: Path,
    out: Path,
    parameters: Mapping[str, Any],
    progress: bool = False,
    num_threads: int | None = None,
) -> None:
    """Execute ``src`` into ``out``; the kernel is stopped at once after the last cell (a graceful
    shutdown waits ~2.5 s per notebook).

    With ``progress`` the kernel writes one line per training epoch and per tenth of a loop to the
    console (``vitedit.progress``; the HTML report keeps the last line of each); papermill's own
    cell counter is off, and the kernel's transport warning ("running over TCP without
    encryption", a local kernel of our own) is silenced by its log level. ``num_threads`` reaches
    every thread pool of the kernel (exported before it starts: :mod:`vitedit.threads`)."""
    import papermill as pm  # lazy: ~2.5 s (see notebook_parameters)

    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    out.parent.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(progress_mod.ENV)
    os.environ[progress_mod.ENV] = "1"  # inherited by the kernel only for this execution
    try:
        with threads.exported(num_threads):
            pm.execute_notebook(
                str(src),
                str(out),
                parameters=dict(parameters),
                kernel_name=KERNEL,
                cwd=str(src.parent),
                progress_bar=False,
                log_output=False,
                shutdown_kernel="immediate",
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    finally:
        if before is None:
            os.environ.pop(progress_mod.ENV, None)
        else:
            os.environ[progress_mod.ENV] = before


def record_failure(folder: Path, stage: str, error: str, **extra: Any) -> None:
    """Record ``stage`` of ``folder`` as failed with its error, render its partial report when the
    executed notebook exists, and refresh the run's index."""
    nb_file = Path(folder) / "notebooks" / f"{stage}.ipynb"
    html = None
    if nb_file.is_file():
        try:
            html = report.render_html(nb_file, Path(folder) / f"{stage}.html").name
        except Exception:  # a notebook too broken to render still gets its failure recorded
            pass
    runs.RunFolder(folder).set_status(
        stage, "failed", error=error, notebook=str(nb_file), html=html, **extra
    )
    try:
        report.write_run_index(folder)
    except OSError:  # a full disk: the failure is recorded; the index is refreshed next time
        pass


def stage_parameters(name: str, run_dir: Path, p: dict) -> dict:
    """What papermill passes to notebook ``name``: the parameters its cell declares, and every
    parameter through a file of this execution (``<run>/notebooks/<name>.params.yaml``, read by
    the notebook's ``params_file``), so that a notebook need not declare a parameter to receive
    it (its cell shows the ones it is about; a new method's parameter reaches it unlisted)."""
    declared = set(notebook_parameters(name)) | {"run_dir"}
    given = {k: v for k, v in p.items() if k in declared}
    if nb.PARAMS_FILE in declared:
        f = Path(run_dir) / "notebooks" / f"{name}.params.yaml"
        paths.atomic_write_text(f, params_mod.dump_yaml(p))
        given[nb.PARAMS_FILE] = str(f)
    return given


def run_notebook(name: str, run_dir: Path, p: dict, log=print) -> Path:
    """Execute one notebook into the run folder and render its HTML; record the outcome.

    The notebook receives every parameter (:func:`stage_parameters`) and validates them itself.
    """
    src = notebook_path(name)
    given = stage_parameters(name, run_dir, p)
    out_nb, out_html = run_dir / "notebooks" / f"{name}.ipynb", run_dir / f"{name}.html"
    t0 = time.perf_counter()
    log(f"[{name}] executing {src} -> {out_nb}")
    try:
        papermill(
            src, out_nb, given, progress=p.get("progress", True), num_threads=p.get("num_threads")
        )
    except BaseException as e:  # includes KeyboardInterrupt: never leave 'running' or 'ok' behind
        try:
            record_failure(
                run_dir, name, short_error(e), seconds=round(time.perf_counter() - t0, 1)
            )
        except OSError:  # a full disk: the original error (or Ctrl-C) is what the caller says
            pass
        raise
    folder = runs.RunFolder(run_dir)
    st = folder.stage(name)
    if st.get("status") != "ok":  # the notebook must have called run.finish()
        folder.set_status(name, "failed", error="notebook ended without recording success")
        raise RuntimeError(f"{name} finished without recording success")
    try:  # a full disk while rendering or recording: the stage is recorded failed, never 'ok'
        warnings = stage_warnings(run_dir, name)
        report.render_html(out_nb, out_html, warnings)
        folder.set_status(
            name,
            "ok",
            **{k: v for k, v in st.items() if k not in ("status", "time", "warnings")},
            html=out_html.name,
            notebook=str(out_nb),
            seconds=round(time.perf_counter() - t0, 1),
            warnings=warnings,
        )
    except BaseException as e:
        folder.set_status(name, "failed", error=short_error(e), notebook=str(out_nb))
        raise
    try:
        report.write_run_index(run_dir)
    except OSError as e:  # the stage is done and recorded; only the index is behind
        log(f"[{name}] could not refresh the run index: {e.strerror}")
    said = f"; {len(warnings)} warning(s) at the top of it" if warnings else ""
    log(f"[{name}] ok in {time.perf_counter() - t0:.1f} s; report {out_html}{said}")
    return out_html


def stage_warnings(run_dir: Path, stage: str) -> list[str]:
    """The warnings (:mod:`vitedit.alerts`) of the methods a stage edits or evaluates: 04/05 their
    edits, 06 every edit method, 07 the baselines; 01 a class absent from a set; none for 02-03."""
    if stage == "01_split":  # a class absent from one of the 4 sets
        return splits.warnings_of(run_dir)
    names = [m.name for m in methods.REGISTRY.values() if stage in m.notebooks]
    edit_stage = any(m.notebook == stage and not m.is_baseline for m in methods.REGISTRY.values())
    # an edit notebook is judged on the edits it just made, not on metrics of earlier edits
    return report.run_warnings(run_dir, names, evaluated=not edit_stage) if names else []


def interrupted(run_dir: Path, todo: list[str]) -> str:
    """The one line a Ctrl-C during a run ends with: what was kept and how to resume."""
    done = sum(runs.RunFolder(run_dir).is_ok(n) for n in todo)
    return (
        f"interrupted: {done} of {len(todo)} stages finished and kept in {run_dir}; "
        "rerun the same command to resume"
    )
