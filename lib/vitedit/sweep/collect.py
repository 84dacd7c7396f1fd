"""Collecting a sweep's results from its run folders alone, and the honest selection of each
method's configuration (validation-side metrics only; Test is attached for reporting)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import alerts, budget, evidence, paths
from .. import methods as methods_mod
from .. import params as params_mod
from ..columns import ORIGINAL_COLUMNS
from ..runs import RunFolder, corrupt_outputs, job_folders, read_object
from .plan import NON_SEMANTIC, fmt, relevant_keys
from .spec import DEFAULT_SELECTION, SweepError, check_selection

PARAM_COLUMNS = [
    "projection_samples",
    "nullspace_threshold",
    "num_edit_layers",
    "edit_layers",
    "max_edits",
    "L2",
    "v_lr",
    "seed",
]
experiment_folders = job_folders


def _metrics(folder: Path, method: str) -> dict | None:
    """The method's row of ``metrics.json`` (None: none, or the file is corrupt)."""
    f = folder / "metrics.json"
    blob = read_object(f)[0] if f.is_file() else None
    return (blob or {}).get("methods", {}).get(method)


def _timing(folder: Path) -> dict:
    f = folder / "timing.json"
    return (read_object(f)[0] if f.is_file() else None) or {}


def summary_row(folder: Path) -> dict:
    """One experiment's row: identity, status, searched parameters, metrics (NaN when missing)."""
    folder = Path(folder)
    run = RunFolder(folder)
    job = run.job()
    method, p = job["method"], job["params"]
    state = run.state(job["notebooks"])
    corrupt = corrupt_outputs(folder)
    m = {} if corrupt else _metrics(folder, method) or {}
    error = run.first_error() if state == "failed" else None
    if corrupt:  # reported, and redone by the next run of the sweep
        state, error = "failed", "; ".join(corrupt) + " (rerun the sweep to redo it)"
    skipped = folder / "edits" / f"{method}.json"
    if state == "ok" and not m and skipped.is_file():
        rec = json.loads(skipped.read_text())
        if rec.get("status") == "skipped":
            state, error = "skipped", rec.get("reason")
    rel = relevant_keys(method)
    row = {
        "experiment": job["name"],
        "method": method,
        "dataset": p["dataset"],
        "status": state,
        "error": error,
        "seed": p["seed"],
        "config_id": job["config_id"],
        "index": job["index"],
        "crossfit_of": job.get("crossfit_of", ""),  # edit_selection second: its 'first' setting
    }
    # the shared keys always: a sweep folder filled by several invocations (one error selection
    # each) must keep its runs apart even when no single spec varied them
    keys = PARAM_COLUMNS + list(methods_mod.SHARED_KEYS) + list(job.get("searched", []))
    for k in dict.fromkeys(keys):
        if k != "seed":
            v = p.get(k) if (k in rel or k in NON_SEMANTIC) else None
            row[k] = fmt(v) if isinstance(v, list) else v
    layers = (
        run.stage("03_locate").get("edit_layers") if methods_mod.get(method).uses_layers else None
    )
    row["layers"] = fmt(layers) if layers else None
    for c in ORIGINAL_COLUMNS:
        row[c] = m.get(c, np.nan)
    for c, v in m.items():
        if c not in row and c != "method":
            row[c] = v
    edit_rec = json.loads(skipped.read_text()) if skipped.is_file() and not corrupt else None
    row["warnings"] = " | ".join(alerts.record_alerts(method, m, edit_rec)) if m else ""
    t = {} if corrupt else _timing(folder)
    wall = t.get("wall_seconds", t.get("job_seconds", np.nan))
    cells, setup = t.get("cells_seconds", np.nan), t.get("setup_cells_seconds", np.nan)
    # papermill's share: process, kernel start, notebook I/O, HTML (wall minus every cell); the
    # notebooks' own setup (imports, data and model loading) is reported apart, and work = the rest
    row.update(
        {
            "job_seconds": wall,
            "papermill_overhead_seconds": wall - cells,
            "setup_cells_seconds": setup,
            "work_seconds": cells - setup,
            "run_dir": str(folder),
            "report": str(folder / "index.html"),
        }
    )
    return {k: (np.nan if v is None and k in ORIGINAL_COLUMNS else v) for k, v in row.items()}


def read_spec(sweep_dir: Path) -> dict:
    f = Path(sweep_dir) / "sweep.yaml"
    return params_mod.load_yaml_text(f.read_text(), str(f)) if f.is_file() else {}


def collect(
    sweep_dir: str | Path, selection: Mapping[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """Rebuild ``param_search_summary_<dataset>.csv`` and ``param_search_details_<dataset>.json`` (and
    ``selection.csv``, ``budget.csv`` and the ``evidence*.csv`` tables) from the run folders alone."""
    sweep_dir = Path(sweep_dir)
    rows = [summary_row(f) for f in experiment_folders(sweep_dir)]
    if not rows:
        raise SweepError(f"{sweep_dir} holds no experiments (runs/<dataset>/<experiment>/job.json)")
    spec = read_spec(sweep_dir)
    selection = check_selection(selection or spec.get("selection") or DEFAULT_SELECTION)
    df = pd.DataFrame(rows).sort_values(["dataset", "index"]).reset_index(drop=True)
    chosen = select(in_sample_rows(spec, df), selection)  # fresh seeds ran its choices only
    if chosen.empty:  # nothing succeeded: the summary still says what failed, and why
        chosen = df.iloc[0:0]
    df["selected"] = df.config_id.isin(set(chosen.config_id)) & (df.status == "ok")
    out = {}
    for ds, g in df.groupby("dataset", sort=True):
        g = g.drop(columns=["index"])
        g = g.loc[
            :,
            [
                c
                for c in g.columns
                if not (g[c].isna().all() and c not in ORIGINAL_COLUMNS + ["error"])
            ],
        ]
        paths.atomic_write_text(sweep_dir / f"param_search_summary_{ds}.csv", g.to_csv(index=False))
        details = {
            "sweep": spec.get("name", sweep_dir.name),
            "dataset": ds,
            "selection": selection,
            "chosen": json.loads(chosen[chosen.dataset == ds].to_json(orient="records")),
            "experiments": [_details(Path(f)) for f in g.run_dir],
        }
        paths.atomic_write_text(
            sweep_dir / f"param_search_details_{ds}.json",
            paths.json_text(details, default=_json_default),
        )
        out[ds] = g
    paths.atomic_write_text(sweep_dir / "selection.csv", chosen.to_csv(index=False))
    points = budget.operating_points(in_sample_rows(spec, df))  # in-sample: the best of each grid
    paths.atomic_write_text(sweep_dir / "budget.csv", points.to_csv(index=False))
    # out of selection: each seed at a setting other seeds chose (vitedit.evidence)
    for name, table in evidence.tables(df).items():
        paths.atomic_write_text(sweep_dir / f"{name}.csv", table.to_csv(index=False))
    return out


def in_sample_rows(spec: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """The rows the in-sample best-of-grid table reads: every seed's, or with ``fresh_seeds:
    chosen`` the design seeds' (the fresh seeds ran the chosen settings only: vitedit.sweep.fresh)."""
    summary = summary[~evidence.is_swap(summary)]  # a swap chooses nothing, in any mode
    if spec.get("fresh_seeds", "grid") != "chosen" or "seed" not in summary:
        return summary
    return summary[summary.seed.isin(evidence.DESIGN_SEEDS)]


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    return str(v)


def _details(folder: Path) -> dict:
    run = RunFolder(folder)
    job = run.job()
    return {
        "experiment": job["name"],
        "method": job["method"],
        "id": job["id"],
        "config_id": job["config_id"],
        "point": job.get("point"),
        "params": {k: job["params"].get(k) for k in relevant_keys(job["method"])},
        "status": run.state(job["notebooks"]),
        "stages": run.status(),
        "metrics": _metrics(folder, job["method"]),
        "timing": _timing(folder) or None,
        "run_dir": str(folder),
    }


def select(summary: pd.DataFrame, selection: Mapping[str, Any] = DEFAULT_SELECTION) -> pd.DataFrame:
    """The chosen configuration per (dataset, method) on the validation criterion.

    Seeds of one configuration are averaged first; ties go to the tie-breakers, then to the
    configuration listed first. Only columns in :data:`vitedit.columns.SELECTION_METRICS` can take
    part, so no Test metric ever influences the choice; Test metrics of the chosen configuration are
    attached (``test_*`` columns, averaged over its seeds) for reporting.
    """
    selection = check_selection(selection)
    crit = [(selection["metric"], selection["mode"])] + [
        tuple(t) for t in selection["tie_breakers"]
    ]
    summary = budget._with_groups(summary)
    ok = summary[summary.status == "ok"]
    keys = budget.group_keys(summary)  # settings compete only on the same edited errors
    rows = []
    for vals, g in ok.groupby([*keys, "method"], sort=True):
        group = dict(zip([*keys, "method"], vals))
        cfgs = []
        for cid, c in g.groupby("config_id", sort=False):
            vals = [c[m].astype(float).mean() if m in c else np.nan for m, _ in crit]
            key = tuple(
                (-v if mode == "max" else v) if np.isfinite(v) else np.inf
                for v, (_, mode) in zip(vals, crit)
            )
            cfgs.append((key, int(c["index"].min()) if "index" in c else 0, cid, c, vals))
        key, _, cid, c, vals = min(cfgs, key=lambda t: (t[0], t[1]))
        row = {
            **group,
            "config_id": cid,
            "n_configs": len(cfgs),
            "n_seeds": len(c),
            "experiments": " ".join(c.experiment),
            "selection_metric": selection["metric"],
            "selection_value": vals[0],
        }
        for (m, _), v in zip(crit[1:], vals[1:]):
            row[m] = v
        for k in PARAM_COLUMNS + ["layers"]:
            if k in c and k != "seed":
                row[k] = c[k].iloc[0]
        for k in [
            "edit_fix_ratio",
            "proj_regression_rate",
            "val_acc_delta",
            "edit_time_seconds",
            "test_acc_before",
            "test_acc_after",
            "test_acc_delta",
            "test_correct_to_wrong",
            "test_wrong_to_correct",
        ]:
            if k in c and k not in row:
                row[k] = c[k].astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows)
