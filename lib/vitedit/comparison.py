"""The comparative outputs of notebooks 06 and 07: one flat row of metrics per method (the
original system's names), ``metrics.json``, the comparison CSVs and the confusion matrices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .columns import LEVELS
from .paths import atomic_write_text


def summary_metrics(
    ev: dict,
    edit_seconds: float | None,
    duration_seconds: float | None,
    info: dict | None = None,
) -> dict:
    """The original system's metric names (one flat dict per method; NaN where undefined, never 0),
    and from the edit's ``info``: its preservation error and whether a checkpoint was reused (the
    retrain baseline's time is then the training time recorded when it was trained)."""
    info = info or {}
    e, p, t = (
        ev["levels"]["edit_samples"],
        ev["levels"]["projection_samples"],
        ev["levels"]["test_set"],
    )
    return {
        "method": e["method"],
        "edit_time_seconds": edit_seconds,
        "duration_seconds": duration_seconds,
        "edit_total_wrong": e["total"],
        "edit_num_fixed": e["num_fixed"],
        "edit_fix_ratio": e["fix_rate"],
        "edit_fixed_mask": e.get("fixed_mask", ""),
        "edit_errors_digest": e.get("errors_digest", ""),
        "test_total": t["total"],
        "test_acc_before": t["acc_before"],
        "test_acc_after": t["acc_after"],
        "test_acc_delta": t["acc_delta"],
        "test_correct_before": t.get("correct_before", np.nan),
        "test_correct_to_wrong": t["correct_to_wrong"],
        "test_wrong_to_correct": t["wrong_to_correct"],
        "test_regression_rate": t.get("regression_rate", np.nan),
        "test_mcnemar_p": t["mcnemar_p"],
        "test_delta_ci_low": t["delta_ci_low"],
        "test_delta_ci_high": t["delta_ci_high"],
        "test_stability": t["stability"],
        "test_auc_after": t["auc_after"],
        "test_f1_macro_after": t["f1_macro_after"],
        "test_auc_before": t["auc_before"],
        "test_majority_share": t.get("majority_share", np.nan),
        "test_same_pair_errors": t["same_pair_errors"],
        "test_same_pair_fix_rate": t["same_pair_fix_rate"],
        "test_same_pair_wrong_to_correct": t.get("same_pair_wrong_to_correct", np.nan),
        "test_pair_classes_regression_rate": t["pair_classes_regression_rate"],
        "proj_stability": p["heldout_stability"],
        "proj_regression_rate": p["heldout_regression_rate"],
        "proj_n_heldout": p["heldout_n"],
        "proj_correct_before": p.get("heldout_correct_before", np.nan),
        "proj_correct_to_wrong": p.get("heldout_correct_to_wrong", np.nan),
        "proj_stability_insample": p["insample_stability"],
        "ed_rest_fix_rate": ev["levels"]["edit_discovery_set"]["fix_rate"],
        "ed_rest_stability": ev["levels"]["edit_discovery_set"]["stability"],
        "ed_rest_errors": ev["levels"]["edit_discovery_set"].get("wrong_before", np.nan),
        "ed_rest_wrong_to_correct": ev["levels"]["edit_discovery_set"]["wrong_to_correct"],
        "ed_rest_fixed_mask": ev["levels"]["edit_discovery_set"].get("fixed_mask", ""),
        # what the edit broke on the same remainder (a disruptive edit also "fixes" some errors)
        **_rest_damage(ev["levels"]["edit_discovery_set"]),
        **_val_metrics(ev),
        **preservation_columns(info),
        "reused_checkpoint": info.get("reused", np.nan),
    }


def _rest_damage(rest: dict) -> dict:
    wrong = rest.get("wrong_before", np.nan)
    return {
        "ed_rest_correct_before": rest["total"] - wrong if np.isfinite(wrong) else np.nan,
        "ed_rest_correct_to_wrong": rest["correct_to_wrong"],
    }


def _val_metrics(ev: dict) -> dict:
    """FT-Val (selection level) columns; NaN where the level is absent (runs made before it existed)."""
    v = ev["levels"].get("val_set")
    if v is None:
        return {
            k: np.nan
            for k in (
                "val_total",
                "val_acc_before",
                "val_acc_after",
                "val_acc_delta",
                "val_fix_rate",
                "val_regression_rate",
                "val_net_fixed",
                "val_correct_before",
                "val_correct_to_wrong",
            )
        }
    return {
        "val_total": v["total"],
        "val_acc_before": v["acc_before"],
        "val_acc_after": v["acc_after"],
        "val_acc_delta": v["acc_delta"],
        "val_fix_rate": v["fix_rate"],
        "val_regression_rate": v["regression_rate"],
        "val_net_fixed": v["wrong_to_correct"] - v["correct_to_wrong"],
        "val_correct_before": v.get("correct_before", np.nan),
        "val_correct_to_wrong": v["correct_to_wrong"],
    }


def write_comparison(
    run_dir, evals: dict[str, dict], metrics: dict[str, dict], extra: dict | None = None
) -> None:
    """``comparative_evaluation_<level>.csv`` (one row per method), confusion matrices (long format
    with a method column) and ``metrics.json`` (merged with what earlier notebooks wrote)."""
    run_dir = Path(run_dir)
    for level in LEVELS:
        rows = pd.DataFrame([ev["levels"][level] for ev in evals.values()])
        f = run_dir / f"comparative_evaluation_{level}.csv"
        if f.is_file():  # keep other methods' rows (06 and 07 write the same files)
            old = pd.read_csv(f)
            rows = pd.concat([old[~old.method.isin(rows.method)], rows], ignore_index=True)
        atomic_write_text(f, rows.to_csv(index=False))
    for name, k in (("confusion_matrix_orig.csv", 0), ("confusion_matrix_edit.csv", 1)):
        frames = []
        for method, ev in evals.items():
            cm = (
                pd.DataFrame(ev["confusion"][k])
                .rename_axis("true")
                .reset_index()
                .melt(id_vars="true", var_name="pred", value_name="count")
            )
            frames.append(cm.assign(method=method))
        new = pd.concat(frames, ignore_index=True)
        f = run_dir / name
        if f.is_file():
            old = pd.read_csv(f)
            new = pd.concat([old[~old.method.isin(new.method)], new], ignore_index=True)
        atomic_write_text(f, new.to_csv(index=False))
    f = run_dir / "metrics.json"
    blob = json.loads(f.read_text()) if f.is_file() else {"methods": {}}
    blob["methods"].update(metrics)
    blob.update(extra or {})
    atomic_write_text(f, paths.json_text(blob, default=lambda v: None if v is None else float(v)))


def forget_methods(run_dir, names) -> None:
    """Remove ``names``' rows from ``metrics.json`` and the comparison CSVs (their results are stale)."""
    run_dir, names = Path(run_dir), set(names)
    files = [f"comparative_evaluation_{level}.csv" for level in LEVELS]
    for f in [
        run_dir / n for n in (*files, "confusion_matrix_orig.csv", "confusion_matrix_edit.csv")
    ]:
        if f.is_file() and f.stat().st_size > 1:
            old = pd.read_csv(f)
            if "method" in old and old.method.isin(names).any():
                atomic_write_text(f, old[~old.method.isin(names)].to_csv(index=False))
    f = run_dir / "metrics.json"
    if f.is_file():
        blob = json.loads(f.read_text())
        if names & set(blob["methods"]):
            blob["methods"] = {k: v for k, v in blob["methods"].items() if k not in names}
            atomic_write_text(f, paths.json_text(blob))


def load_metrics(run_dir) -> pd.DataFrame:
    """``metrics.json`` of a run as a table (one row per method)."""
    f = Path(run_dir) / "metrics.json"
    if not f.is_file():
        return pd.DataFrame()
    return pd.DataFrame(json.loads(f.read_text())["methods"].values())


def preservation_columns(info: dict) -> dict:
    """The worst edited layer's median ‖ΔW k‖ / ‖W k‖, in-sample and held out (NaN for methods that
    do not edit a projection), and whether it exceeds the documented bound."""
    pres = info.get("preservation") or {}
    return {
        "preservation_insample": pres.get("insample_median_max", np.nan),
        "preservation_heldout": pres.get("heldout_median_max", np.nan),
        "preservation_exceeds_bound": pres.get("exceeds_bound", np.nan),
    }
