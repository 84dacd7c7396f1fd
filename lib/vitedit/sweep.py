"""Parameter sweeps: a YAML grid over the notebooks' parameters, run as papermill experiments.

    vitedit-sweep run params/sweeps/retinamnist_edit.yaml --dry-run
    vitedit-sweep run params/sweeps/retinamnist_edit.yaml --parallel 2
    vitedit-sweep collect reports/sweeps/retinamnist_edit

A sweep folder (``reports/sweeps/<name>``) holds:

- ``shared/<prep>/``: the shared stages (01 split, 02 training, 03 tracing), one run folder per
  distinct (data, training, tracing) parameters; the checkpoint itself is content-addressed in
  ``checkpoint_dir`` and the editing statistics in ``<checkpoint_dir>/stats``, so other sweeps and
  runs reuse them too;
- ``runs/<dataset>/<experiment>/``: one run folder per experiment (one edit method or one baseline
  with one configuration), named by its parameters and a hash of everything that determines its
  result. It starts from a copy of its shared stages' outputs and runs 04/05 + 06, or 07;
- ``param_search_summary_<dataset>.csv`` / ``param_search_details_<dataset>.json``, ``selection.csv``
  and ``index.html`` (notebook 08 rendered).

An experiment is done when every notebook it runs recorded ``ok``; a rerun skips done experiments
and redoes the rest. The configuration reported as chosen is selected on a validation criterion
(FT-Val and the edit/FT-Train levels, :data:`vitedit.evaluation.SELECTION_METRICS`), never on Test.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from . import params as params_mod
from . import paths, runs

SWEEPS_DIR = "reports/sweeps"
METHODS = ("alphaedit", "memit", "head", "head_closed_form")
BASELINES = {"retrain": "baseline_retrain", "finetune": "baseline_finetune"}
ALL_METHODS = METHODS + tuple(BASELINES.values())
SPEC_KEYS = {"name", "description", "params", "set", "grid", "seeds", "methods", "baselines", "selection"}
# parameters that do not change a result (where and how it runs); never part of a content hash
NON_SEMANTIC = {"data_path", "download", "verify_md5", "resume", "checkpoint_dir", "device", "pin_memory",
                "num_threads", "run_dir", "progress", "eval_batch_size", "trace_max_rows", "edit_methods",
                "head_variants", "baseline_methods"}
# locate parameters that only pick layers from the tracing result (the tracing is shared across them)
LAYER_CHOICE = {"edit_layers", "num_edit_layers", "no_astra_layers", "rank_kind", "rank_scope"}
SHARED_EDIT = ("max_edits", "projection_samples")
METHOD_KEYS = {  # what each method's result depends on beyond data + training (+ evaluate)
    "alphaedit": None,  # every locate and edit parameter
    "memit": None,
    "head": SHARED_EDIT + ("head_lr", "head_steps", "ewc_lambda"),
    "head_closed_form": SHARED_EDIT + ("ridge_lambda", "head_margin", "head_error_weight"),
    "baseline_retrain": SHARED_EDIT + ("baseline_epochs",),
    "baseline_finetune": SHARED_EDIT + ("baseline_epochs", "baseline_lr"),
}
NOTEBOOKS = {"alphaedit": ["04_edit_alphaedit", "06_evaluate"], "memit": ["04_edit_alphaedit", "06_evaluate"],
             "head": ["05_edit_head", "06_evaluate"], "head_closed_form": ["05_edit_head", "06_evaluate"],
             "baseline_retrain": ["07_baselines"], "baseline_finetune": ["07_baselines"]}
PREP_FILES = {"01_split": ["split_indices.npz", "split_meta.json", "data_split_info.csv"],
              "02_train": ["checkpoint.json", "training_metrics.csv", "set_accuracy.csv"],
              "03_locate": ["layer_importance.csv", "layer_statistics.csv", "locate_summary.json"]}
ORIGINAL_COLUMNS = ["edit_time_seconds", "duration_seconds", "edit_total_wrong", "edit_num_fixed", "edit_fix_ratio",
                    "test_total", "test_acc_before", "test_acc_after", "test_acc_delta", "test_correct_to_wrong",
                    "test_wrong_to_correct", "proj_stability", "proj_regression_rate"]
PARAM_COLUMNS = ["projection_samples", "nullspace_threshold", "num_edit_layers", "edit_layers", "max_edits", "L2",
                 "v_lr", "seed"]
DEFAULT_SELECTION = {"metric": "val_acc_delta", "mode": "max",
                     "tie_breakers": [["edit_fix_ratio", "max"], ["proj_regression_rate", "min"]]}
JOB_FILE = "job.json"


class SweepError(params_mod.ParamError):
    """A sweep spec or option is invalid; the message names the problem and the fix."""


# --------------------------------------------------------------------------- the spec
def load_spec(path: str | Path) -> dict:
    path = paths.resolve(path, Path.cwd())
    spec = params_mod.read_mapping(path, "sweep spec")  # see params/sweeps/ for examples
    spec.setdefault("name", path.stem)
    spec["params"] = [str(paths.resolve(f, path.parent)) for f in _as_list(spec.get("params"))]
    spec["_source"] = str(path)
    return spec


def _as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def check_spec(spec: Mapping[str, Any]) -> dict:
    """Validate a spec (unknown keys, grid keys and values, methods, selection); return it normalised."""
    unknown = set(spec) - SPEC_KEYS - {"_source"}
    if unknown:
        raise SweepError(f"unknown sweep spec key(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    name = str(spec.get("name") or "")
    if not name or "/" in name or name.startswith("."):
        raise SweepError(f"sweep name {name!r} must be a plain folder name")
    for f in spec.get("params", []):
        params_mod.load_yaml(f)  # existence, YAML and keys
    fixed = params_mod.validate(spec.get("set") or {}, where="the spec's 'set'")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError("'grid' must map parameter names to lists of values")
    clean_grid = {}
    for k, values in grid.items():
        if k not in params_mod.SCHEMA:
            raise SweepError("grid: " + params_mod.unknown_key_message(k))
        if k == "seed":
            raise SweepError("grid: give seeds with the spec's 'seeds' list (or --seeds), not as a grid key")
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid: '{k}' must be a non-empty list of values, got {values!r}")
        clean_grid[k] = [params_mod.validate({k: v}, where=f"grid '{k}'")[k] for v in values]
    seeds = [params_mod.validate({"seed": s})["seed"] for s in _as_list(spec.get("seeds"))]
    methods = _as_list(spec.get("methods", ["alphaedit", "memit", "head", "head_closed_form"]))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SweepError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    bl = spec.get("baselines", list(BASELINES))
    bl = [] if bl is False or bl is None else _as_list(bl)
    bad = [b for b in bl if b not in BASELINES]
    if bad:
        raise SweepError(f"unknown baseline(s) {bad}; choose from {list(BASELINES)} (or false for none)")
    if not methods and not bl:
        raise SweepError("the sweep runs nothing: give 'methods' and/or 'baselines'")
    selection = check_selection({**DEFAULT_SELECTION, **(spec.get("selection") or {})})
    return {"name": name, "description": spec.get("description", ""), "params": list(spec.get("params", [])),
            "set": fixed, "grid": clean_grid, "seeds": seeds, "methods": methods, "baselines": bl,
            "selection": selection, "source": spec.get("_source")}


def check_selection(sel: Mapping[str, Any]) -> dict:
    """A selection criterion may use validation-side columns only; Test is for reporting."""
    unknown = set(sel) - {"metric", "mode", "tie_breakers"}
    if unknown:
        raise SweepError(f"selection: unknown key(s) {sorted(unknown)} (metric, mode, tie_breakers)")
    from .evaluation import SELECTION_METRICS

    crit = [[sel["metric"], sel.get("mode", "max")]] + [list(t) for t in sel.get("tie_breakers", [])]
    for metric, mode in crit:
        if str(metric).startswith("test") or metric not in SELECTION_METRICS:
            raise SweepError(f"selection metric {metric!r} is not allowed: a configuration is chosen on "
                             f"validation-side metrics only ({', '.join(SELECTION_METRICS)}); Test metrics are "
                             f"reported for the chosen configuration, never used to choose it")
        if mode not in ("max", "min"):
            raise SweepError(f"selection mode for {metric!r} must be 'max' or 'min', got {mode!r}")
    return {"metric": crit[0][0], "mode": crit[0][1], "tie_breakers": crit[1:]}


# --------------------------------------------------------------------------- the plan
@dataclass
class Prep:
    id: str
    name: str
    params: dict
    needs_locate: bool = False

    def folder(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / "shared" / self.name

    @property
    def notebooks(self) -> list[str]:
        return ["01_split", "02_train"] + (["03_locate"] if self.needs_locate else [])


@dataclass
class Experiment:
    index: int
    id: str
    config_id: str  # the same configuration at another seed shares it
    name: str
    method: str
    params: dict
    prep: Prep
    point: dict = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.params["dataset"]

    @property
    def notebooks(self) -> list[str]:
        return NOTEBOOKS[self.method]

    def folder(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / "runs" / self.dataset / self.name


def _semantic(p: Mapping[str, Any], stages: Iterable[str], extra: Iterable[str] = (), drop: Iterable[str] = ()) -> dict:
    stages, drop = set(stages), set(drop)
    keys = [k for k in params_mod.SCHEMA if (params_mod.STAGE_OF[k] in stages or k in extra)
            and k not in NON_SEMANTIC and k not in drop]
    return {k: p[k] for k in keys}


def relevant_keys(method: str) -> list[str]:
    """Parameters that determine ``method``'s result (data and training included)."""
    if METHOD_KEYS[method] is None:
        drop = {"nullspace_threshold", "nullspace_relative"} if method == "memit" else set()
        return list(_semantic(params_mod.defaults(), ["data", "train", "locate", "edit", "evaluate"], drop=drop))
    return list(_semantic(params_mod.defaults(), ["data", "train", "evaluate"], extra=METHOD_KEYS[method]))


def prep_key(p: Mapping[str, Any]) -> dict:
    return _semantic(p, ["data", "train", "locate"], drop=LAYER_CHOICE)


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def experiment_name(method: str, p: Mapping[str, Any], searched: Iterable[str], h: str) -> str:
    """``proj{N}_edit{M}_{top{K}|layers{a-b}|last3}_thresh{T}`` (the original's folder scheme) for the
    edit methods, ``edit{M}`` for the baselines; then other searched parameters, seed and hash."""
    keys = relevant_keys(method)
    parts = [method]
    shown = {"seed", "dataset"}
    if method in ("alphaedit", "memit"):
        layers = (f"layers{_fmt(p['edit_layers'])}" if p["edit_layers"] else "last3" if p["no_astra_layers"]
                  else f"top{p['num_edit_layers']}")
        parts += [f"proj{p['projection_samples']}", f"edit{p['max_edits']}", layers]
        if method == "alphaedit":
            parts.append(f"thresh{_fmt(p['nullspace_threshold'])}")
        shown |= {"projection_samples", "max_edits", "edit_layers", "no_astra_layers", "num_edit_layers",
                  "nullspace_threshold"}
    elif method in ("head", "head_closed_form"):
        parts += [f"proj{p['projection_samples']}", f"edit{p['max_edits']}"]
        shown |= {"projection_samples", "max_edits"}
    else:
        parts.append(f"edit{p['max_edits']}")
        shown |= {"max_edits"}
    for k in searched:
        if k not in shown and (k in keys or k in NON_SEMANTIC):
            parts.append(f"{k}-{_fmt(p[k])}")
    parts += [f"s{p['seed']}", h[:8]]
    return "_".join(parts).replace("/", "-").replace(" ", "")


def method_params(method: str, p: Mapping[str, Any]) -> dict:
    """The full parameters of one experiment: only ``method`` runs in its notebooks."""
    q = dict(p)
    if method in ("alphaedit", "memit"):
        q["edit_methods"] = [method]
    elif method in ("head", "head_closed_form"):
        q["head_variants"] = ["gradient" if method == "head" else "closed_form"]
    else:
        q["baseline_methods"] = [next(k for k, v in BASELINES.items() if v == method)]
    return q


def searched_params(spec: Mapping[str, Any]) -> list[str]:
    """The parameters a spec varies: grid keys with several values, and ``seed`` for several seeds."""
    searched = [k for k, v in (spec.get("grid") or {}).items() if len(v) > 1]
    return searched + (["seed"] if len(spec.get("seeds") or []) > 1 else [])


def expand(spec: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> list[Experiment]:
    """Every experiment of the (checked) spec, deduplicated by content hash, in a stable order:
    for each grid point (and seed), its edit methods, then its baselines."""
    base_layers = [*spec["params"], spec["set"], dict(overrides or {})]
    base = params_mod.resolve(*base_layers)
    grid = dict(spec["grid"])
    seeds = spec["seeds"] or [base["seed"]]
    searched = searched_params(spec)
    from . import locate, models

    out: dict[str, Experiment] = {}
    preps: dict[str, Prep] = {}
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        for seed in seeds:
            p = params_mod.resolve(*base_layers, point, {"seed": seed})
            try:
                locate.check_choices(p["trace_kinds"], p["trace_scopes"], models.depth(p["model"]),
                                     p["edit_layers"] or [])
            except Exception as e:
                raise SweepError(f"grid point {point}: {e}") from None
            pk = prep_key(p)
            pid = params_mod.digest(pk, 12)
            prep = preps.setdefault(pid, Prep(pid, f"{p['dataset']}_{p['model']}_s{p['seed']}_{pid[:8]}",
                                              dict(p)))
            for method in [*spec["methods"], *(BASELINES[b] for b in spec["baselines"])]:
                key = {k: p[k] for k in relevant_keys(method)}
                key.update({k: p[k] for k in grid if k in NON_SEMANTIC})  # searched run settings count too
                eid = params_mod.digest({"method": method, **key}, 12)
                if eid in out:
                    continue
                cid = params_mod.digest({"method": method, **{k: v for k, v in key.items() if k != "seed"}}, 12)
                if method in ("alphaedit", "memit"):
                    prep.needs_locate = True
                out[eid] = Experiment(len(out), eid, cid, experiment_name(method, p, searched, eid), method,
                                      method_params(method, p), prep, {**point, "seed": seed})
    return list(out.values())


def select_slice(exps: Sequence[Experiment], continue_from: int = 0, max_experiments: int | None = None):
    """``--continue-from N`` skips the first N experiments; ``--max-experiments M`` keeps M of the rest."""
    if continue_from < 0 or (max_experiments is not None and max_experiments < 1):
        raise SweepError("--continue-from must be >= 0 and --max-experiments >= 1")
    rest = list(exps)[continue_from:]
    return rest[:max_experiments] if max_experiments else rest


# --------------------------------------------------------------------------- state of a folder
def notebooks_ok(folder: Path, notebooks: Sequence[str]) -> bool:
    st = runs.status(folder)
    return all(st.get(n, {}).get("status") == "ok" for n in notebooks)


def experiment_state(folder: Path, notebooks: Sequence[str]) -> str:
    """ok (every notebook recorded ok), failed (a failure is recorded), or todo."""
    st = runs.status(folder)
    if not st:
        return "todo"
    if all(st.get(n, {}).get("status") == "ok" for n in notebooks):
        return "ok"
    if any(v.get("status") == "failed" for v in st.values()):
        return "failed"
    return "todo"


def _job_blob(kind: str, folder: Path, params: dict, notebooks: list[str], **extra) -> dict:
    return {"kind": kind, "folder": str(folder), "params": {**params, "run_dir": str(folder)},
            "notebooks": notebooks, **extra}


def write_job(folder: Path, blob: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / JOB_FILE
    paths.atomic_write_text(f, json.dumps(blob, indent=2, default=str))
    return f


# --------------------------------------------------------------------------- one job (in its own process)
def materialize(folder: Path, prep_dir: Path, p: Mapping[str, Any], stages: Sequence[str]) -> None:
    """Start an experiment's run folder from its shared stages: their outputs are copied (small
    files), their status entries point to the shared reports, and the edit layers are chosen here
    from the shared tracing result with this experiment's layer parameters."""
    from . import locate, models

    pst = runs.status(prep_dir)
    for stage in stages:
        if pst.get(stage, {}).get("status") != "ok":
            raise RuntimeError(f"shared stage {stage} in {prep_dir} is not complete")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    for stage in stages:
        for name in PREP_FILES[stage]:
            if (prep_dir / name).is_file():
                shutil.copy2(prep_dir / name, folder / name)
    runs.write_params(folder, p)
    extra: dict[str, dict] = {stage: {} for stage in stages}
    if "03_locate" in stages:
        stats = pd.read_csv(folder / "layer_statistics.csv") if (folder / "layer_statistics.csv").stat().st_size > 1 \
            else pd.DataFrame()
        n_layers = json.loads((folder / "locate_summary.json").read_text()).get("n_layers") or models.depth(p["model"])
        choice = locate.choose_edit_layers(stats, n_layers, p["edit_layers"], p["num_edit_layers"],
                                           p["no_astra_layers"], p["rank_kind"], p["rank_scope"])
        locate.save_edit_layers(folder, choice)
        extra["03_locate"] = {"edit_layers": choice["layers"]}
    for stage in stages:
        entry = {k: v for k, v in pst[stage].items() if k not in ("status", "time")}
        if entry.get("html"):
            entry["html"] = os.path.relpath(prep_dir / entry["html"], folder)
        runs.set_status(folder, stage, "ok", **{**entry, **extra[stage], "reused_from": os.path.relpath(prep_dir, folder)})


def execute(job_file: str | Path) -> int:
    """Run one job (``vitedit-sweep exec``): a prep's notebooks, or an experiment's."""
    from . import cli, report

    job_file = Path(job_file)
    job = json.loads(job_file.read_text())
    folder = Path(job["folder"])
    p = job["params"]
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    t0 = time.perf_counter()
    runs.clear_status(folder, "sweep")
    try:
        if job["kind"] == "experiment" and not notebooks_ok(folder, job["inherit"]):
            materialize(folder, Path(job["prep_dir"]), p, job["inherit"])
        elif runs.stored_params(folder) is None:
            folder.mkdir(parents=True, exist_ok=True)
            runs.write_params(folder, p)
        for name in job["notebooks"]:
            if runs.status(folder).get(name, {}).get("status") != "ok":
                cli.run_notebook(name, folder, p)
        rc = 0
    except BaseException as e:  # recorded (a notebook's own failure already is), never hidden
        if not any(v.get("status") == "failed" for v in runs.status(folder).values()):
            runs.set_status(folder, "sweep", "failed", error=cli._short_error(e))
        print(f"error: {cli._short_error(e)}", file=sys.stderr)
        rc = 1
    report.write_run_index(folder)
    _write_timing(folder, job, time.perf_counter() - t0)
    if job.get("wandb") and job["kind"] == "experiment":
        _log_wandb(job, folder)
    return rc


def notebook_cell_seconds(nb_file: Path) -> dict:
    """Seconds papermill measured per notebook: the whole execution and the sum of its cells."""
    import nbformat

    if not nb_file.is_file():
        return {}
    nb = nbformat.read(nb_file, as_version=4)
    cells = [c.metadata.get("papermill", {}).get("duration") or 0.0 for c in nb.cells]
    setup = [c.metadata.get("papermill", {}).get("duration") or 0.0 for c in nb.cells
             if c.cell_type == "code" and "nb.start(" in c.source]
    return {"papermill_seconds": nb.metadata.get("papermill", {}).get("duration"), "cells_seconds": float(sum(cells)),
            "setup_cell_seconds": float(setup[0]) if setup else 0.0}


def _write_timing(folder: Path, job: dict, seconds: float) -> None:
    per = {n: notebook_cell_seconds(folder / "notebooks" / f"{n}.ipynb") for n in job["notebooks"]}
    cells = sum(v.get("cells_seconds", 0.0) for v in per.values())
    setup = sum(v.get("setup_cell_seconds", 0.0) for v in per.values())
    blob = {"job_seconds": round(seconds, 2), "cells_seconds": round(cells, 2),
            "setup_cells_seconds": round(setup, 2), "overhead_seconds": round(seconds - cells, 2), "notebooks": per}
    paths.atomic_write_text(folder / "timing.json", json.dumps(blob, indent=2))


# --------------------------------------------------------------------------- W&B
WANDB_METRICS = {"test/accuracy_delta": "test_acc_delta", "test/stability": "test_stability",
                 "edit/fix_rate": "edit_fix_ratio", "proj/stability": "proj_stability",
                 "timing/edit_seconds": "edit_time_seconds", "test/accuracy_before": "test_acc_before",
                 "test/accuracy_after": "test_acc_after", "edit/num_fixed": "edit_num_fixed",
                 "proj/regression_rate": "proj_regression_rate", "val/accuracy_delta": "val_acc_delta",
                 "val/regression_rate": "val_regression_rate", "timing/duration_seconds": "duration_seconds"}


def wandb_payload(row: Mapping[str, Any]) -> dict:
    """The original's metric names from one summary row; a missing or undefined metric is left out
    (never logged as 0)."""
    out = {}
    for name, col in WANDB_METRICS.items():
        v = row.get(col)
        if v is None or isinstance(v, bool):
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[name] = v
    return out


def _log_wandb(job: dict, folder: Path) -> None:
    cfg = job["wandb"]
    try:
        import wandb

        row = summary_row(folder)
        run = wandb.init(project=cfg.get("project") or "vit-model-editing", entity=cfg.get("entity"),
                         tags=cfg.get("tags") or None, group=job.get("sweep"), name=job.get("name"),
                         job_type=job.get("method"), dir=str(folder), reinit=True,
                         config={"method": job.get("method"),
                                 **{k: job["params"][k] for k in relevant_keys(job["method"])}})
        payload = wandb_payload(row)
        if payload:
            run.log(payload)
        run.summary["status"] = row["status"]
        if row.get("error"):
            run.summary["error"] = str(row["error"])[:500]
        run.finish(exit_code=0 if row["status"] in ("ok", "skipped") else 1)
    except Exception as e:  # logging must never turn a finished experiment into a failure
        print(f"warning: W&B logging failed: {type(e).__name__}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------- running a sweep
def _settle(folder: Path, notebooks: Sequence[str], result) -> None:
    """After a job ended: a timeout or a dead worker becomes a recorded failure with its error and
    the notebook that was running; nothing is left 'running'."""
    from . import report

    timing = folder / "timing.json"
    if timing.is_file():  # the wall time as the sweep saw it (process start and imports included)
        t = json.loads(timing.read_text())
        t["wall_seconds"] = result.seconds
        paths.atomic_write_text(timing, json.dumps(t, indent=2))
    st = runs.status(folder)
    if result.ok and all(st.get(n, {}).get("status") == "ok" for n in notebooks):
        return
    why = (f"timeout after {result.seconds:.0f} s (--timeout)" if result.timed_out
           else f"worker exited with code {result.returncode}")
    for stage, entry in st.items():
        if entry.get("status") == "running":
            nb_file = folder / "notebooks" / f"{stage}.ipynb"
            html = None
            if nb_file.is_file():
                try:
                    html = report.render_html(nb_file, folder / f"{stage}.html").name
                except Exception:
                    pass
            runs.set_status(folder, stage, "failed", error=why, notebook=str(nb_file), html=html)
    if not any(v.get("status") == "failed" for v in runs.status(folder).values()):
        runs.set_status(folder, "sweep", "failed", error=f"{why}: {result.output_tail[-400:]}",
                        log="job.log")
    report.write_run_index(folder)


def _lock_sweep(sweep_dir: Path):
    import fcntl

    sweep_dir.mkdir(parents=True, exist_ok=True)
    f = open(sweep_dir / ".sweep.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SweepError(f"another process is running the sweep in {sweep_dir}; wait for it, or give another "
                         f"--sweep-dir") from None
    return f


def run_sweep(spec: dict, exps: Sequence[Experiment], sweep_dir: Path, executor, wandb_cfg: dict | None = None,
              log=print, progress: bool = True) -> dict:
    """Run the shared stages, then the experiments; record every failure; collect the results."""
    from tqdm.auto import tqdm

    lock = _lock_sweep(sweep_dir)
    t0 = time.perf_counter()
    try:
        paths.atomic_write_text(sweep_dir / "sweep.yaml", yaml.safe_dump(
            {k: v for k, v in spec.items()}, sort_keys=False))
        preps = {e.prep.id: e.prep for e in exps}
        counts = {"ok": 0, "failed": 0, "skipped_done": 0}
        todo_preps = [pr for pr in preps.values() if not notebooks_ok(pr.folder(sweep_dir), pr.notebooks)]
        failed_preps: dict[str, str] = {}
        if todo_preps:
            files = {str(write_job(pr.folder(sweep_dir), _job_blob("prep", pr.folder(sweep_dir), pr.params,
                                                                   pr.notebooks, name=pr.name,
                                                                   sweep=spec["name"]))): pr
                     for pr in todo_preps}
            log(f"shared stages: {len(todo_preps)} to run ({len(preps) - len(todo_preps)} done)")
            for res in tqdm(executor.map(files), total=len(files), desc="shared stages", disable=not progress):
                pr = files[res.job]
                _settle(pr.folder(sweep_dir), pr.notebooks, res)
                if not notebooks_ok(pr.folder(sweep_dir), pr.notebooks):
                    failed_preps[pr.id] = _first_error(pr.folder(sweep_dir))
        todo, files = [], {}
        for e in exps:
            folder = e.folder(sweep_dir)
            if notebooks_ok(folder, e.notebooks):
                counts["skipped_done"] += 1
                continue
            if e.prep.id in failed_preps:
                folder.mkdir(parents=True, exist_ok=True)
                runs.write_params(folder, e.params)
                write_job(folder, _experiment_blob(e, sweep_dir, spec, wandb_cfg))
                runs.set_status(folder, "sweep", "failed",
                                error=f"shared stages failed: {failed_preps[e.prep.id]} "
                                      f"(see {os.path.relpath(e.prep.folder(sweep_dir), folder)}/index.html)")
                counts["failed"] += 1
                continue
            blob = _experiment_blob(e, sweep_dir, spec, wandb_cfg)
            try:  # the experiment's folder starts from its shared stages' outputs (here: no import cost in the job)
                if not notebooks_ok(folder, blob["inherit"]):
                    materialize(folder, e.prep.folder(sweep_dir), e.params, blob["inherit"])
            except Exception as err:
                write_job(folder, blob)
                runs.set_status(folder, "sweep", "failed", error=f"could not start from the shared stages: {err}")
                counts["failed"] += 1
                continue
            files[str(write_job(folder, blob))] = e
            todo.append(e)
        log(f"experiments: {len(todo)} to run, {counts['skipped_done']} already done"
            + (f", {counts['failed']} blocked by failed shared stages" if counts["failed"] else ""))
        for res in tqdm(executor.map(files), total=len(files), desc="experiments", disable=not progress):
            e = files[res.job]
            _settle(e.folder(sweep_dir), e.notebooks, res)
            ok = notebooks_ok(e.folder(sweep_dir), e.notebooks)
            counts["ok" if ok else "failed"] += 1
            if not ok:
                log(f"failed: {e.name}: {_first_error(e.folder(sweep_dir))}")
    except KeyboardInterrupt:  # killed: what finished stays; what was running is marked, and redone on rerun
        for folder in [pr.folder(sweep_dir) for pr in preps.values()] + [e.folder(sweep_dir) for e in exps]:
            for stage, entry in runs.status(folder).items():
                if entry.get("status") == "running":
                    runs.set_status(folder, stage, "failed", error="interrupted: the sweep was killed")
        raise
    finally:
        lock.close()
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    log_file = sweep_dir / "sweep_log.json"  # one entry per invocation (a resumed sweep has several)
    history = json.loads(log_file.read_text()) if log_file.is_file() else []
    history.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "executor": getattr(executor, "name", "?"),
                    "workers": getattr(executor, "workers", None), "experiments": len(exps), **counts})
    paths.atomic_write_text(log_file, json.dumps(history, indent=2))
    return counts


def _experiment_blob(e: Experiment, sweep_dir: Path, spec: dict, wandb_cfg) -> dict:
    inherit = ["01_split", "02_train"] + (["03_locate"] if e.method in ("alphaedit", "memit") else [])
    return _job_blob("experiment", e.folder(sweep_dir), e.params, e.notebooks, inherit=inherit,
                     prep_dir=str(e.prep.folder(sweep_dir)), method=e.method, name=e.name, id=e.id,
                     config_id=e.config_id, index=e.index, point=e.point, sweep=spec["name"],
                     searched=searched_params(spec), wandb=wandb_cfg)


def _first_error(folder: Path) -> str:
    for stage, v in runs.status(folder).items():
        if v.get("status") == "failed":
            return f"{stage}: {v.get('error')}"
    return "incomplete"


# --------------------------------------------------------------------------- collecting results
def summary_row(folder: Path) -> dict:
    """One experiment's row: identity, status, searched parameters, metrics (NaN when missing)."""
    folder = Path(folder)
    job = json.loads((folder / JOB_FILE).read_text())
    method, p = job["method"], job["params"]
    st = runs.status(folder)
    state = experiment_state(folder, job["notebooks"])
    metrics_file = folder / "metrics.json"
    m = json.loads(metrics_file.read_text())["methods"].get(method, {}) if metrics_file.is_file() else {}
    error = _first_error(folder) if state == "failed" else None
    skipped = folder / "edits" / f"{method}.json"
    if state == "ok" and not m and skipped.is_file():
        rec = json.loads(skipped.read_text())
        if rec.get("status") == "skipped":
            state, error = "skipped", rec.get("reason")
    rel = relevant_keys(method)
    row = {"experiment": job["name"], "method": method, "dataset": p["dataset"], "status": state, "error": error,
           "seed": p["seed"], "config_id": job["config_id"], "index": job["index"]}
    for k in dict.fromkeys(PARAM_COLUMNS + list(job.get("searched", []))):
        if k != "seed":
            v = p.get(k) if (k in rel or k in NON_SEMANTIC) else None
            row[k] = _fmt(v) if isinstance(v, list) else v
    layers = st.get("03_locate", {}).get("edit_layers") if method in ("alphaedit", "memit") else None
    row["layers"] = _fmt(layers) if layers else None
    for c in ORIGINAL_COLUMNS:
        row[c] = m.get(c, np.nan)
    for c, v in m.items():
        if c not in row and c != "method":
            row[c] = v
    timing = folder / "timing.json"
    t = json.loads(timing.read_text()) if timing.is_file() else {}
    wall = t.get("wall_seconds", t.get("job_seconds", np.nan))
    cells, setup = t.get("cells_seconds", np.nan), t.get("setup_cells_seconds", np.nan)
    # papermill's share: process, kernel start, notebook I/O, HTML (wall minus every cell); the
    # notebooks' own setup (imports, data and model loading) is reported apart, and work = the rest
    row.update({"job_seconds": wall, "papermill_overhead_seconds": wall - cells, "setup_cells_seconds": setup,
                "work_seconds": cells - setup,
                "run_dir": str(folder), "report": str(folder / "index.html")})
    return {k: (np.nan if v is None and k in ORIGINAL_COLUMNS else v) for k, v in row.items()}


def experiment_folders(sweep_dir: Path) -> list[Path]:
    return sorted(f.parent for f in (Path(sweep_dir) / "runs").glob(f"*/*/{JOB_FILE}"))


def collect(sweep_dir: str | Path, selection: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """Rebuild ``param_search_summary_<dataset>.csv`` and ``param_search_details_<dataset>.json`` (and
    ``selection.csv``) from the run folders alone."""
    sweep_dir = Path(sweep_dir)
    rows = [summary_row(f) for f in experiment_folders(sweep_dir)]
    if not rows:
        raise SweepError(f"{sweep_dir} holds no experiments (runs/<dataset>/<experiment>/{JOB_FILE})")
    spec_file = sweep_dir / "sweep.yaml"
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.is_file() else {}
    selection = check_selection(selection or spec.get("selection") or DEFAULT_SELECTION)
    df = pd.DataFrame(rows).sort_values(["dataset", "index"]).reset_index(drop=True)
    chosen = select(df, selection)
    df["selected"] = df.config_id.isin(set(chosen.config_id)) & (df.status == "ok")
    out = {}
    for ds, g in df.groupby("dataset", sort=True):
        g = g.drop(columns=["index"])
        g = g.loc[:, [c for c in g.columns if not (g[c].isna().all() and c not in ORIGINAL_COLUMNS + ["error"])]]
        paths.atomic_write_text(sweep_dir / f"param_search_summary_{ds}.csv", g.to_csv(index=False))
        details = {"sweep": spec.get("name", sweep_dir.name), "dataset": ds, "selection": selection,
                   "chosen": json.loads(chosen[chosen.dataset == ds].to_json(orient="records")),
                   "experiments": [_details(Path(f)) for f in g.run_dir]}
        paths.atomic_write_text(sweep_dir / f"param_search_details_{ds}.json",
                                json.dumps(details, indent=2, default=_json_default))
        out[ds] = g
    paths.atomic_write_text(sweep_dir / "selection.csv", chosen.to_csv(index=False))
    return out


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    return str(v)


def _details(folder: Path) -> dict:
    job = json.loads((folder / JOB_FILE).read_text())
    m_file = folder / "metrics.json"
    m = json.loads(m_file.read_text())["methods"].get(job["method"]) if m_file.is_file() else None
    timing = folder / "timing.json"
    return {"experiment": job["name"], "method": job["method"], "id": job["id"], "config_id": job["config_id"],
            "point": job.get("point"), "params": {k: job["params"][k] for k in relevant_keys(job["method"])},
            "status": experiment_state(folder, job["notebooks"]), "stages": runs.status(folder), "metrics": m,
            "timing": json.loads(timing.read_text()) if timing.is_file() else None, "run_dir": str(folder)}


def select(summary: pd.DataFrame, selection: Mapping[str, Any] = DEFAULT_SELECTION) -> pd.DataFrame:
    """The chosen configuration per (dataset, method) on the validation criterion.

    Seeds of one configuration are averaged first; ties go to the tie-breakers, then to the
    configuration listed first. Only columns in :data:`vitedit.evaluation.SELECTION_METRICS` can take part, so no Test
    metric ever influences the choice; Test metrics of the chosen configuration are attached
    (``test_*`` columns, averaged over its seeds) for reporting.
    """
    selection = check_selection(selection)
    crit = [(selection["metric"], selection["mode"])] + [tuple(t) for t in selection["tie_breakers"]]
    ok = summary[summary.status == "ok"]
    rows = []
    for (ds, method), g in ok.groupby(["dataset", "method"], sort=True):
        cfgs = []
        for cid, c in g.groupby("config_id", sort=False):
            vals = [c[m].astype(float).mean() if m in c else np.nan for m, _ in crit]
            key = tuple((-v if mode == "max" else v) if np.isfinite(v) else np.inf for v, (_, mode) in zip(vals, crit))
            cfgs.append((key, int(c["index"].min()) if "index" in c else 0, cid, c, vals))
        key, _, cid, c, vals = min(cfgs, key=lambda t: (t[0], t[1]))
        row = {"dataset": ds, "method": method, "config_id": cid, "n_configs": len(cfgs), "n_seeds": len(c),
               "experiments": " ".join(c.experiment), "selection_metric": selection["metric"],
               "selection_value": vals[0]}
        for (m, _), v in zip(crit[1:], vals[1:]):
            row[m] = v
        for k in PARAM_COLUMNS + ["layers"]:
            if k in c and k != "seed":
                row[k] = c[k].iloc[0]
        for k in ["edit_fix_ratio", "proj_regression_rate", "val_acc_delta", "edit_time_seconds",
                  "test_acc_before", "test_acc_after", "test_acc_delta", "test_correct_to_wrong",
                  "test_wrong_to_correct"]:
            if k in c and k not in row:
                row[k] = c[k].astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the report
def render_report(sweep_dir: str | Path, log=print) -> Path:
    """Execute notebook 08 (the sweep's summary) into the sweep folder; its HTML is ``index.html``."""
    import papermill as pm

    from . import report

    sweep_dir = Path(sweep_dir)
    src = paths.project_root() / "notebooks" / "08_sweep_report.ipynb"
    out_nb = sweep_dir / "notebooks" / "08_sweep_report.ipynb"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    pm.execute_notebook(str(src), str(out_nb), parameters={"sweep_dir": str(sweep_dir)}, kernel_name="python3",
                        cwd=str(src.parent), progress_bar=False, log_output=False, shutdown_kernel="immediate")
    html = report.render_html(out_nb, sweep_dir / "index.html")
    log(f"sweep report: {html}")
    return html


def report_context(sweep_dir: str | Path) -> dict:
    """What notebook 08 shows: the summary tables, the chosen configurations, the searched
    parameters and the selection criterion (all read from the sweep folder)."""
    sweep_dir = Path(sweep_dir)
    spec_file = sweep_dir / "sweep.yaml"
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.is_file() else {}
    tables = {f.stem.replace("param_search_summary_", ""): pd.read_csv(f)
              for f in sorted(sweep_dir.glob("param_search_summary_*.csv"))}
    summary = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
    sel_file = sweep_dir / "selection.csv"
    chosen = pd.read_csv(sel_file) if sel_file.is_file() and sel_file.stat().st_size > 1 else pd.DataFrame()
    searched = searched_params(spec)
    if len(summary):
        summary["report_link"] = [os.path.relpath(r, sweep_dir) for r in summary.report]
    log_file = sweep_dir / "sweep_log.json"
    history = pd.DataFrame(json.loads(log_file.read_text())) if log_file.is_file() else pd.DataFrame()
    return {"spec": spec, "summary": summary, "chosen": chosen, "searched": searched, "history": history,
            "selection": check_selection(spec.get("selection") or DEFAULT_SELECTION),
            "shared": sorted(os.path.relpath(p, sweep_dir) for p in (sweep_dir / "shared").glob("*/index.html"))}


TIMING_COLUMNS = ["job_seconds", "papermill_overhead_seconds", "setup_cells_seconds", "work_seconds",
                  "overhead_beyond_work_seconds"]


def status_counts(summary: pd.DataFrame) -> pd.DataFrame:
    """Experiments per (dataset, method, status)."""
    return summary.groupby(["dataset", "method", "status"]).size().rename("experiments").reset_index()


def timing_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per method over completed experiments: wall time, papermill's share, the
    notebooks' setup cells, the work, and the overhead beyond the work (wall minus work)."""
    ok = summary[summary.status == "ok"].assign(
        overhead_beyond_work_seconds=lambda d: d.job_seconds - d.work_seconds)
    return ok.groupby("method")[TIMING_COLUMNS].median()


def links_table(summary: pd.DataFrame) -> str:
    """HTML table: each experiment, its status and a link to its run report (relative links)."""
    import html as h

    rows = []
    for _, r in summary.iterrows():
        err = h.escape(str(r["error"])) if isinstance(r.get("error"), str) else ""
        rows.append(f"<tr><td><a href=\"{h.escape(r['report_link'])}\">{h.escape(r['experiment'])}</a></td>"
                    f"<td>{h.escape(r['method'])}</td><td>{h.escape(r['status'])}</td><td>{err}</td></tr>")
    return ("<table><tr><th>experiment (run report)</th><th>method</th><th>status</th><th>error</th></tr>"
            + "".join(rows) + "</table>")


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vitedit-sweep", description="Parameter sweeps over the study's notebooks.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) a sweep")
    r.add_argument("spec", help="sweep spec YAML (params/sweeps/...)")
    r.add_argument("--sweep-dir", help=f"sweep folder (default: {SWEEPS_DIR}/<spec name>); a rerun resumes it")
    r.add_argument("--dry-run", action="store_true", help="list the experiments and their folders, run nothing")
    r.add_argument("--max-experiments", type=int, help="run at most this many experiments")
    r.add_argument("--continue-from", type=int, default=0, help="skip the first N experiments of the list")
    r.add_argument("--timeout", type=float, default=7200, help="seconds per experiment (7200)")
    r.add_argument("--no-baselines", action="store_true", help="no baseline experiments")
    r.add_argument("--baseline-epochs", type=int, help="epochs of both baselines")
    r.add_argument("--baseline-lr", type=float, help="learning rate of baseline 2")
    r.add_argument("--parallel", type=int, default=1, help="parallel experiments (0 = one per GPU)")
    r.add_argument("--gpu", type=int, help="pin every experiment to this GPU")
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument("--ray-address", help="Ray cluster address ('auto', 'ray://host:port'); default: local Ray")
    r.add_argument("--gpus-per-experiment", type=float, default=None,
                   help="Ray: GPUs per experiment (fractions allowed; default 1 if GPUs exist, else 0)")
    r.add_argument("--cpus-per-experiment", type=float, default=1, help="Ray: CPUs per experiment")
    r.add_argument("--methods", nargs="+", choices=METHODS, help="edit methods (overrides the spec)")
    r.add_argument("--datasets", nargs="+", help="grid over these datasets")
    r.add_argument("--data-path", help="data file or folder (liver: folder with imgs.npy, labs.npy)")
    r.add_argument("--projection-samples-range", nargs="+", help="grid: projection_samples")
    r.add_argument("--nullspace-threshold-range", nargs="+", type=float, help="grid: nullspace_threshold")
    r.add_argument("--num-edit-layers-range", nargs="+", type=int, help="grid: num_edit_layers")
    r.add_argument("--fixed-edit-layers", nargs="+", help="grid: fixed layer sets, e.g. 9,10,11 1,2,3")
    r.add_argument("--max-edits-range", nargs="+", type=int, help="grid: max_edits")
    r.add_argument("--max-samples", type=int, help="errors traced by 03 (fixed)")
    r.add_argument("--seeds", nargs="+", type=int, help="seeds (split, training, noise)")
    r.add_argument("--grid", action="append", default=[], metavar="KEY=[V1,V2]", help="grid over any parameter")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix any parameter")
    r.add_argument("--checkpoint-dir", help="folder of the fine-tuned checkpoints and statistics cache")
    r.add_argument("--wandb", action="store_true", help="log every experiment to Weights & Biases")
    r.add_argument("--wandb-project", default="vit-model-editing")
    r.add_argument("--wandb-entity")
    r.add_argument("--wandb-tags", nargs="*", default=[])
    r.add_argument("--no-report", action="store_true", help="skip rendering the sweep report (notebook 08)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)  # ignore the spec's grid
    c = sub.add_parser("collect", help="rebuild the summary CSV/JSON (and report) from a sweep's run folders")
    c.add_argument("sweep_dir")
    c.add_argument("--no-report", action="store_true")
    t = sub.add_parser("trial", help="one configuration as a W&B sweep trial: the spec's parameters plus "
                                     "KEY=VALUE pairs (the spec's grid is ignored), logged to W&B")
    t.add_argument("spec")
    t.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--sweep-dir")
    t.add_argument("--checkpoint-dir")
    t.add_argument("--data-path")
    t.add_argument("--timeout", type=float, default=7200)
    t.add_argument("--wandb-project", default="vit-model-editing")
    t.add_argument("--wandb-entity")
    e = sub.add_parser("exec", help=argparse.SUPPRESS)
    e.add_argument("job")
    i = sub.add_parser("index", help="rewrite reports/index.html (every run and sweep)")
    i.add_argument("--reports-dir", default="reports")
    return ap


def spec_from_args(args: argparse.Namespace) -> dict:
    """The spec with the command line's overrides (grid ranges, seeds, methods, fixed values), checked."""
    spec = load_spec(args.spec)
    grid = {} if args.trial else dict(spec.get("grid") or {})
    ranges = {"dataset": args.datasets, "projection_samples": args.projection_samples_range,
              "nullspace_threshold": args.nullspace_threshold_range, "num_edit_layers": args.num_edit_layers_range,
              "max_edits": args.max_edits_range}
    for k, v in ranges.items():
        if v:
            grid[k] = list(v)
    if args.fixed_edit_layers:
        grid["edit_layers"] = [[int(x) for x in s.replace(",", " ").split()] for s in args.fixed_edit_layers]
        grid.pop("num_edit_layers", None)
    for g in args.grid:
        k, v = (g.split("=", 1) + [""])[:2]
        vals = yaml.safe_load(v) if v.strip() else None
        if not isinstance(vals, list):
            raise SweepError(f"--grid expects KEY=[V1,V2,...], got {g!r}")
        grid[k.strip()] = vals
    spec["grid"] = grid
    if args.seeds:
        spec["seeds"] = args.seeds
    if args.methods:
        spec["methods"] = args.methods
    if args.no_baselines:
        spec["baselines"] = False
    fixed = dict(spec.get("set") or {})
    for s in args.set:
        k, v = params_mod.parse_assignment(s)
        fixed[k] = v
    opts = {"baseline_epochs": args.baseline_epochs, "baseline_lr": args.baseline_lr, "max_samples": args.max_samples,
            "data_path": str(paths.resolve(args.data_path, Path.cwd())) if args.data_path else None,
            "checkpoint_dir": str(paths.resolve(args.checkpoint_dir, Path.cwd())) if args.checkpoint_dir else None}
    fixed.update({k: v for k, v in opts.items() if v is not None})
    if args.no_progress:
        fixed["progress"] = False
    spec["set"] = fixed
    return check_spec(spec)


def trial_argv(args: argparse.Namespace) -> list[str]:
    """``trial SPEC k=v ...`` as a ``run``: the spec without its grid, the trial's values fixed, W&B on.
    The spec must name one method and no baselines (one trial = one experiment = one W&B run)."""
    spec = load_spec(args.spec)
    if len(_as_list(spec.get("methods", METHODS))) != 1 or spec.get("baselines", True) not in (False, [], None):
        raise SystemExit("error: a W&B trial runs one experiment: the spec must list one method and "
                         "'baselines: false'")
    argv = ["run", args.spec, "--timeout", str(args.timeout), "--no-report", "--no-progress", "--wandb",
            "--wandb-project", args.wandb_project]
    for a in args.assignments:
        argv += ["--set", a.removeprefix("--")]
    for opt in ("sweep_dir", "checkpoint_dir", "data_path", "wandb_entity"):
        if getattr(args, opt):
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return argv + ["--trial"]


def _preflight(exps: Sequence[Experiment]) -> None:
    """Data files of every dataset exist and are valid before anything is written."""
    from . import cli

    seen = set()
    for e in exps:
        key = (e.params["dataset"], e.params["size"], e.params.get("data_path"))
        if key not in seen:
            seen.add(key)
            cli.preflight(dict(e.params), log=lambda *a: None)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and threading_main():
        signal.signal(signal.SIGTERM, _terminate)  # a killed sweep takes its running jobs down with it
    if args.command == "exec":
        return execute(args.job)
    if args.command == "trial":
        return main(trial_argv(args))
    if args.command == "index":
        from . import report

        print(report.write_reports_index(paths.resolve(args.reports_dir, Path.cwd())))
        return 0
    if args.command == "collect":
        try:
            tables = collect(paths.resolve(args.sweep_dir, Path.cwd()))
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for ds, t in tables.items():
            print(f"{ds}: {len(t)} experiments, {int((t.status == 'ok').sum())} ok -> "
                  f"{Path(args.sweep_dir) / f'param_search_summary_{ds}.csv'}")
        if not args.no_report:
            render_report(paths.resolve(args.sweep_dir, Path.cwd()))
        return 0
    from . import datasets, executors

    try:
        spec = spec_from_args(args)
        exps = select_slice(expand(spec), args.continue_from, args.max_experiments)
        sweep_dir = paths.resolve(args.sweep_dir, Path.cwd()) if args.sweep_dir else paths.resolve(SWEEPS_DIR) / spec["name"]
        if not exps:
            raise SweepError("no experiments left after --continue-from/--max-experiments")
        _preflight(exps)
        workers, gpus = executors.plan_workers(args.parallel, args.gpu)
    except (SweepError, params_mod.ParamError, datasets.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preps = {e.prep.id: e.prep for e in exps}
    print(f"sweep {spec['name']}: {len(exps)} experiments, {len(preps)} shared stage folder(s) -> {sweep_dir}")
    if args.dry_run:
        for e in exps:
            folder = e.folder(sweep_dir)
            state = experiment_state(folder, e.notebooks) if folder.is_dir() else "todo"
            print(f"{e.index:4d}  {e.method:18s} {state:6s} {os.path.relpath(folder, Path.cwd())}")
        for pr in preps.values():
            print(f"shared: {' + '.join(pr.notebooks)}  {os.path.relpath(pr.folder(sweep_dir), Path.cwd())}")
        return 0
    wandb_cfg = ({"project": args.wandb_project, "entity": args.wandb_entity, "tags": args.wandb_tags}
                 if args.wandb else None)
    if args.executor == "ray":
        g = args.gpus_per_experiment if args.gpus_per_experiment is not None else (1 if gpus else 0)
        ex = executors.RayExecutor(args.ray_address, g, args.cpus_per_experiment, args.timeout)
    else:
        ex = executors.LocalExecutor(workers, gpus, args.timeout)
    print(f"executor: {ex.name}" + (f", {workers} worker(s), GPUs {gpus or 'none'}" if ex.name == "local" else ""))
    try:
        counts = run_sweep(spec, exps, sweep_dir, ex, wandb_cfg, progress=not args.no_progress)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished experiments are kept; rerun the same command to resume {sweep_dir}",
              file=sys.stderr)
        return 130
    finally:
        ex.close()
    tables = collect(sweep_dir)
    for ds in tables:
        print(f"summary: {sweep_dir / f'param_search_summary_{ds}.csv'}")
    if not args.no_report:
        try:
            render_report(sweep_dir)
        except Exception as e:  # the CSVs are written; a report failure is reported, not hidden
            print(f"error: the sweep report failed: {e}", file=sys.stderr)
            return 1
    from . import report

    if sweep_dir.parent == paths.resolve(SWEEPS_DIR):
        report.write_reports_index(paths.resolve("reports"))
    print(f"done in {counts['seconds']:.0f} s: {counts['ok']} ok, {counts['failed']} failed, "
          f"{counts['skipped_done']} already done")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
