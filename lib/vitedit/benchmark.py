"""The cross-dataset benchmark's report (notebook 09): base models beside the MedMNIST reference,
the dataset x method headline at each regression budget, edit against retrain time, the
confusion-pair generalisation, and a generated "what this shows" per dataset that names a winner
only where the 95 % CIs over seeds separate. Reads a sweep folder only; importable without torch.
"""

from __future__ import annotations

import html as h
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import budget, methods
from .sweep.report import BENCHMARK_NOTEBOOK as REPORT_NOTEBOOK  # noqa: F401 (rendered by the sweep)
from .sweep.report import report_context

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: ResNet-18 at 28 x 28, Test ACC and AUC
RESNET18_28 = {
    "pathmnist": (0.907, 0.983),
    "dermamnist": (0.735, 0.917),
    "retinamnist": (0.524, 0.717),
    "bloodmnist": (0.958, 0.998),
    "organamnist": (0.935, 0.997),
    "tissuemnist": (0.676, 0.930),
}


def _ci_cell(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo):
        return f"{mean:.{digits}f} (no CI: one usable seed)"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _fmt(v, spec: str) -> str:
    """A number for a table people read ("–" where there is none)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if f != f else format(f, spec)


def _mean_ci(values) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return np.nan, np.nan, np.nan
    half = budget.t_half_width(v)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def shared_records(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per shared stage folder (dataset x seed): the base model's training time and epochs,
    its FT-Val accuracy, and the tracing's cost per error."""
    rows = []
    for folder in sorted((Path(sweep_dir) / "shared").glob("*")):
        params_file, ckpt = folder / "job.json", folder / "checkpoint.json"
        if not params_file.is_file() or not ckpt.is_file():
            continue
        p = json.loads(params_file.read_text())["params"]
        ref = json.loads(ckpt.read_text())
        hist = folder / "training_metrics.csv"
        h_df = pd.read_csv(hist) if hist.is_file() else pd.DataFrame()
        loc = folder / "locate_summary.json"
        loc = json.loads(loc.read_text()) if loc.is_file() else {}
        rows.append(
            {
                "dataset": p["dataset"],
                "seed": p["seed"],
                "model": p["model"],
                "epochs_run": len(h_df),
                "train_minutes": float(h_df.seconds.sum()) / 60 if "seconds" in h_df else np.nan,
                "best_val_acc": ref.get("best_val_acc", np.nan),
                "trace_seconds_per_error": loc.get("trace_seconds_per_error", np.nan),
                "region_trace_seconds_per_error": loc.get("region_trace_seconds_per_error", np.nan),
                "n_errors_edit_discovery": loc.get("n_errors", np.nan),
                "folder": str(folder),
            }
        )
    return pd.DataFrame(rows)


def base_models(summary: pd.DataFrame, shared: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the base model's Test accuracy and AUC (mean [95 % CI] over seeds) beside the
    MedMNIST v2 ResNet-18 (28) reference, and its training time."""
    rows = []
    ok = summary[summary.status == "ok"] if len(summary) else summary
    for ds in sorted(set(ok.dataset) | set(shared.dataset if len(shared) else [])):
        per_seed = ok[ok.dataset == ds].groupby("seed")
        acc = (
            per_seed.test_acc_before.first() if "test_acc_before" in ok else pd.Series(dtype=float)
        )
        auc = (
            per_seed.test_auc_before.first() if "test_auc_before" in ok else pd.Series(dtype=float)
        )
        sh = shared[shared.dataset == ds] if len(shared) else shared
        ref = RESNET18_28.get(ds, (np.nan, np.nan))
        rows.append(
            {
                "dataset": ds,
                "seeds": int(len(acc)),
                "test_acc": _ci_cell(*_mean_ci(acc)),
                "resnet18_28_acc": ref[0],
                "test_auc": _ci_cell(*_mean_ci(auc)),
                "resnet18_28_auc": ref[1],
                "train_minutes": float(sh.train_minutes.mean()) if len(sh) else np.nan,
                "epochs_run": float(sh.epochs_run.mean()) if len(sh) else np.nan,
                "edit_discovery_errors": float(sh.n_errors_edit_discovery.mean())
                if len(sh)
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def headline(points: pd.DataFrame) -> pd.DataFrame:
    """Dataset x method at each budget: fix rate and Test delta with their 95 % CIs over seeds,
    the largest per-seed McNemar p, and the Test errors of the edited pairs that the edit fixed."""
    rows = []
    keys = budget.group_keys(points)
    for _, r in points.iterrows():
        row = {k: r[k] for k in keys}
        row.update({"method": r.method, "budget": f"<= {r.budget:.0%}"})
        if not r.get("config_id"):
            row["fix rate"] = "none within budget"
            rows.append(row)
            continue
        row["fix rate"] = _ci_cell(
            r[budget.FIX], r[f"{budget.FIX}_ci_low"], r[f"{budget.FIX}_ci_high"]
        )
        row["held-out regression"] = _ci_cell(
            r.proj_regression_rate, r.proj_regression_rate_ci_low, r.proj_regression_rate_ci_high
        )
        row["Test delta"] = _ci_cell(
            r.test_acc_delta, r.test_acc_delta_ci_low, r.test_acc_delta_ci_high
        )
        row["McNemar p (max over seeds)"] = _fmt(r.get("test_mcnemar_p_max", np.nan), ".2g")
        row["same-pair Test errors fixed"] = _fmt(r.get("test_same_pair_fix_rate", np.nan), ".3f")
        row["regression in the pair's classes"] = _fmt(
            r.get("test_pair_classes_regression_rate", np.nan), ".3f"
        )
        row["seeds"] = _fmt(r.get("n_seeds", np.nan), ".0f")
        rows.append(row)
    return pd.DataFrame(rows)


def times(summary: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: the edit time at the 5 % operating point (mean over seeds) against
    the retrain baseline's (a full training on FT-Train plus the errors)."""
    ok = summary[summary.status == "ok"] if len(summary) else summary
    keys = [k for k in budget.group_keys(points) if k in ok.columns]
    ok = budget._with_groups(ok) if len(ok) else ok
    retrain = (
        ok[ok.method == methods.by_alias("retrain").name].groupby(keys).edit_time_seconds.mean()
        if len(ok)
        else pd.Series(dtype=float)
    )
    p5 = points[(points.budget == max(budget.BUDGETS)) & (points.config_id != "")]
    rows = []
    for _, r in p5.iterrows():
        k = tuple(r[c] for c in keys)
        rt = retrain.get(k if len(k) > 1 else k[0], np.nan)
        rows.append(
            {
                "dataset": r.dataset,
                **({"edit_selection": r.edit_selection} if "edit_selection" in r else {}),
                "method": r.method,
                "edit_seconds": r.edit_time_seconds,
                "retrain_seconds": rt,
                "speed-up vs retrain": rt / r.edit_time_seconds
                if np.isfinite(rt) and r.edit_time_seconds > 0
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def winner(points: pd.DataFrame, b: float) -> dict:
    """The method that fixes the most at budget ``b``, named only when its fix rate's 95 % CI lies
    above every other method's (separated); otherwise the overlapping leaders."""
    p = points[(points.budget == b) & (points.config_id != "")].copy()
    p = p[np.isfinite(p[budget.FIX].astype(float))]
    if p.empty:
        return {
            "budget": b,
            "winner": None,
            "text": f"at <= {b:.0%}: no method stays within budget",
        }
    p = p.sort_values(budget.FIX, ascending=False)
    top = p.iloc[0]
    n = int(p.n_seeds.min()) if "n_seeds" in p else 0
    cell = _ci_cell(top[budget.FIX], top[f"{budget.FIX}_ci_low"], top[f"{budget.FIX}_ci_high"])
    name = f"{top.method} ({cell})"
    if len(p) == 1:
        return {
            "budget": b,
            "winner": top.method,
            "text": f"at <= {b:.0%}: only {name} stays within budget",
        }
    if not np.isfinite(top[f"{budget.FIX}_ci_low"]):
        return {
            "budget": b,
            "winner": None,
            "text": f"at <= {b:.0%}: {name} fixes the most, but on one seed there is no CI: no "
            f"winner is claimed",
        }
    rest = p.iloc[1:]
    # a rival without a CI (one usable seed) cannot be shown to lie below: it counts as overlapping
    overlap = rest[~(rest[f"{budget.FIX}_ci_high"] < top[f"{budget.FIX}_ci_low"])]
    if overlap.empty:
        return {
            "budget": b,
            "winner": top.method,
            "text": f"at <= {b:.0%}: {name} fixes the most, and its CI is above every other "
            f"method's ({n} seeds)",
        }
    return {
        "budget": b,
        "winner": None,
        "text": f"at <= {b:.0%}: {name} fixes the most, but its CI overlaps "
        f"{', '.join(overlap.method)}: the evidence ({n} seeds) does not separate them",
    }


def findings(points: pd.DataFrame, base: pd.DataFrame) -> dict[str, str]:
    """A short "what this shows" paragraph per dataset (and way of choosing the errors)."""
    out = {}
    keys = budget.group_keys(points)
    for vals, g in points.groupby(keys, sort=True):
        vals = vals if isinstance(vals, tuple) else (vals,)
        ds = vals[0]
        b = base[base.dataset == ds]
        head = f"Base model Test accuracy {b.test_acc.iloc[0]}" if len(b) else ""
        ref = b.resnet18_28_acc.iloc[0] if len(b) else np.nan
        if np.isfinite(ref):
            head += f" (MedMNIST ResNet-18 at 28 px: {ref:.3f})"
        parts = [head + "."] if head else []
        parts += [winner(g, bud)["text"] + "." for bud in sorted(g.budget.unique())]
        ok5 = g[(g.budget == max(budget.BUDGETS)) & (g.config_id != "")]
        hurt = ok5[ok5.test_acc_delta_ci_high < 0] if len(ok5) else ok5
        if len(hurt):
            parts.append(
                "Test accuracy falls (CI below 0) at the 5 % point for "
                + ", ".join(hurt.method)
                + "."
            )
        if "test_same_pair_fix_rate" in ok5 and ok5.test_same_pair_fix_rate.notna().any():
            gen = ok5[ok5.test_same_pair_fix_rate.notna()]
            parts.append(
                "Generalisation at the 5 % point (Test errors sharing an edited error's confusion "
                "pair that the edit fixed; seed means): "
                + ", ".join(
                    f"{r.method} {r.test_same_pair_fix_rate:.0%}" for _, r in gen.iterrows()
                )
                + "."
            )
        out[" / ".join(str(v) for v in vals)] = " ".join(parts)
    return out


def report_warnings(summary: pd.DataFrame, points: pd.DataFrame) -> list[str]:
    """The benchmark page's warnings in words: runs that did not finish, datasets with one seed
    (no interval, no winner), and the warnings (:mod:`vitedit.alerts`) of every operating point
    the headline table shows."""
    out = []
    if not len(summary):
        return out
    bad = summary[summary.status != "ok"]
    if len(bad):
        out.append(
            f"{len(bad)} of {len(summary)} runs did not finish ok "
            f"({', '.join(sorted(set(bad.status)))}): the figures rest on the others; see 'Every "
            "run' below"
        )
    one_seed = [d for d, g in summary.groupby("dataset") if g.seed.nunique() < 2]
    if one_seed:
        out.append(
            f"{', '.join(one_seed)}: one seed only, so no confidence interval and no winner is "
            "claimed there"
        )
    if len(points) and "experiments" in points and "warnings" in summary:
        by_name = summary.set_index("experiment")["warnings"].fillna("").astype(str)
        for _, r in points.iterrows():
            names = str(r.get("experiments") or "").split()
            texts = sorted({by_name.get(n, "") for n in names} - {""})
            for t in texts:
                out.append(f"{r['dataset']}, at <= {float(r['budget']):.0%} regression: {t}")
    return out


def null_space_methods() -> dict[str, str]:
    """The null-space methods and the parameter that sets their preserved subspace (registry)."""
    return {m.name: m.null_space_key for m in methods.REGISTRY.values() if m.null_space_key}


def key_energy(summary: pd.DataFrame) -> pd.DataFrame:
    """Where the edited errors' keys lie, per dataset, null-space method, threshold and edited layer.

    A null-space edit can only act on the part of a key in the range of its projection ``P`` (the
    directions the preserved keys barely use). ``error_energy_editable`` is the mean share of an
    edited error's key energy in that range (recorded by the editor as
    ``error_key_energy_outside``); ``preserved_energy_editable`` the same share for the preserved
    keys (head edits record it). ``kept_dim`` of ``dim`` directions are editable. Means over every
    finished run of the setting (seeds and L2 values: the energy depends on P and the keys only).
    """
    cols = [
        "dataset",
        "method",
        "threshold",
        "layer",
        "runs",
        "kept_dim",
        "dim",
        "error_energy_editable",
        "preserved_energy_editable",
    ]
    if not len(summary) or "run_dir" not in summary:
        return pd.DataFrame(columns=cols)
    key_of = null_space_methods()
    ok = summary[(summary.status == "ok") & summary.method.isin(list(key_of))]
    rows = []
    for _, r in ok.iterrows():
        f = Path(str(r.run_dir)) / "edits" / f"{r.method}.json"
        if not f.is_file():
            continue
        rec = json.loads(f.read_text())
        info = rec.get("info") or {}
        for layer, li in (rec.get("layer_info") or {}).items():
            err = li.get("error_key_energy_outside", info.get("error_key_energy_outside"))
            if err is None:  # recorded since the editors report it; older runs lack it
                continue
            pres = li.get("preserved_key_energy_outside", info.get("preserved_key_energy_outside"))
            rows.append(
                {
                    "dataset": r.dataset,
                    "method": r.method,
                    # the edit's own record: the summary lists only the searched parameters
                    "threshold": float(
                        (rec.get("settings") or {}).get(key_of[r.method], r.get(key_of[r.method]))
                    ),
                    "layer": layer,
                    "kept_dim": li.get("kept_dim", np.nan),
                    "dim": li.get("dim", np.nan),
                    "error_energy_editable": float(err),
                    "preserved_energy_editable": np.nan if pres is None else float(pres),
                }
            )
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    keys = ["dataset", "method", "threshold", "layer"]
    out = (
        df.groupby(keys, sort=True, dropna=False)
        .agg(
            runs=("error_energy_editable", "size"),
            kept_dim=("kept_dim", "mean"),
            dim=("dim", "first"),
            error_energy_editable=("error_energy_editable", "mean"),
            preserved_energy_editable=("preserved_energy_editable", "mean"),
        )
        .reset_index()
    )
    return out[cols]


def run_links(summary: pd.DataFrame, sweep_dir: str | Path) -> str:
    """HTML list of every run's report and status, per dataset (relative links)."""
    sweep_dir = Path(sweep_dir)
    parts = []
    for ds, g in summary.groupby("dataset", sort=True):
        items = "".join(
            f'<li><a href="{h.escape(os.path.relpath(r.report, sweep_dir))}">'
            f"{h.escape(r.experiment)}</a> ({h.escape(str(r.status))})</li>"
            for _, r in g.iterrows()
        )
        parts.append(f"<h4>{h.escape(ds)} ({len(g)} runs)</h4><ul>{items}</ul>")
    return "".join(parts)


def context(sweep_dir: str | Path) -> dict:
    """Everything notebook 09 shows, read from the sweep folder."""
    ctx = report_context(sweep_dir)
    summary, points = ctx["summary"], ctx["budget_points"]
    shared = shared_records(sweep_dir)
    base = base_models(summary, shared) if len(summary) else pd.DataFrame()
    return {
        **ctx,
        "shared_records": shared,
        "base": base,
        "headline": headline(points) if len(points) else pd.DataFrame(),
        "times": times(summary, points) if len(points) else pd.DataFrame(),
        "findings": findings(points, base) if len(points) and len(base) else {},
        "key_energy": key_energy(summary),
    }
