"""The cross-dataset benchmark's report (notebook 09): base models beside the MedMNIST reference,
the out-of-selection headline (vitedit.evidence: each seed at a setting other seeds chose;
generalisation and damage first), the in-sample best-of-grid table, edit against retrain time, and
a generated "what this shows" per dataset that names a winner only where paired tests on the shared
errors do (each comparison of the top method significant, seeds as units). Reads a sweep folder
only; importable without torch.
"""

from __future__ import annotations

import html as h
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import budget, evidence, keyenergy, methods
from .datasets.core import SLICED_SCANS
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


def crossfit_cell(r: pd.Series, digits: int = 3) -> str:
    """The cross-fit figure, saying on how many of the row's seeds its swap ran when not all."""
    name = "crossfit_generalisation"
    cell = _ci_cell(*(float(r.get(f"{name}{x}", np.nan)) for x in ("", "_low", "_high")), digits)
    k = float(r.get(f"{name}_seeds", np.nan))
    if cell != "n/a" and np.isfinite(k) and k < float(r.n_seeds):
        cell += f" ({k:.0f} of {float(r.n_seeds):.0f} seeds)"
    return cell


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
    """In-sample (best of each grid, :mod:`vitedit.budget`): dataset x method at each budget, fix
    rate and Test delta with 95 % intervals over seeds (in [0, 1]), the largest per-seed McNemar p,
    and the Test errors of the edited pairs that the edit fixed. The out-of-selection table is
    :func:`evidence_table`."""
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
        row["training-set regression"] = _ci_cell(
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


def evidence_table(fig: pd.DataFrame) -> pd.DataFrame:
    """The out-of-selection headline (:func:`vitedit.evidence.figures`) for people: per group,
    role, budget and method, generalisation and damage first, then the in-sample efficacy; each
    'rate [95 % interval]' pooled over the reported seeds."""
    rows = []
    keys = [c for c in fig.columns if c in ("dataset", *budget.SHARED_GROUPS)]
    for _, r in fig.iterrows():
        row = {k: r[k] for k in keys}
        row.update({"seeds": r.role + " " + (r.seeds or "–"), "budget": f"<= {r.budget:.0%}"})
        row["method"] = r.method
        if not r.n_seeds:
            row[evidence.FIGURES["generalisation"][2]] = r.note or "no seed reported"
            rows.append(row)
            continue
        for name, (_, _, label) in evidence.FIGURES.items():
            row[label] = _ci_cell(r[name], r[f"{name}_low"], r[f"{name}_high"])
        row[evidence.FIGURES["crossfit_generalisation"][2]] = crossfit_cell(r)
        row["net Test change"] = _ci_cell(r.test_delta, r.test_delta_low, r.test_delta_high)
        row["Test samples broken per fixed error"] = _fmt(r.get("test_broken_per_fix"), ".2f")
        row["costs nothing on Test?"] = r.test_delta_equivalence
        row["settings"] = r.settings
        if r.method == methods.by_alias("retrain").name:  # its epoch was chosen on FT-Val
            row["note"] = "FT-Val chose its epoch: its FT-Val regression is optimistic"
        if isinstance(r.get("caveat"), str) and r.caveat:  # e.g. it read the samples not edited
            row["note"] = r.caveat
        rows.append(row)
    return pd.DataFrame(rows)


def findings(fig: pd.DataFrame, win: pd.DataFrame, base: pd.DataFrame) -> dict[str, str]:
    """A short "what this shows" paragraph per dataset (and way of choosing the errors), from the
    out-of-selection figures: a winner only where the paired tests name one (vitedit.evidence), the
    methods whose Test accuracy falls or is shown unchanged, the confirmation seeds first."""
    out = {}
    keys = [c for c in fig.columns if c in ("dataset", *budget.SHARED_GROUPS)]
    for vals, g in fig.groupby(keys, sort=True):
        vals = vals if isinstance(vals, tuple) else (vals,)
        b = base[base.dataset == vals[0]] if len(base) else base
        head = f"Base model Test accuracy {b.test_acc.iloc[0]}" if len(b) else ""
        ref = b.resnet18_28_acc.iloc[0] if len(b) else np.nan
        if np.isfinite(ref):
            head += f" (MedMNIST ResNet-18 at 28 px: {ref:.3f})"
        parts = [head + "."] if head else []
        role = "confirmation" if (g.role == "confirmation").any() else "design"
        g = g[(g.role == role) & (g.n_seeds > 0)]
        w = win
        for k, v in zip(keys, vals):
            w = w[w[k] == v] if len(w) else w
        w = w[w.role == role] if len(w) else w
        seeds = sorted({s for x in g.seeds for s in str(x).split()})
        parts.append(
            f"On {'fresh (confirmation)' if role == 'confirmation' else 'design'} seeds "
            f"{' '.join(seeds) or '–'}, each at a setting chosen on other seeds"
            + ("" if len(seeds) > 1 else " (one seed: no interval over seeds)")
            + "."
        )
        for bud in sorted(g.budget.unique()):
            for _, r in (w[w.budget == bud] if len(w) else w).iterrows():
                what = evidence.MASK_WORDS.get(r.figure, r.figure)
                parts.append(f"At <= {bud:.0%}, on the {what}: {r.text}.")
        g5 = g[g.budget == max(budget.BUDGETS)]
        hurt = g5[g5.test_delta_high < 0]
        if len(hurt):
            parts.append(
                "Test accuracy falls (interval below 0) at the 5 % point for "
                + ", ".join(hurt.method)
                + "."
            )
        same = g5[g5.test_delta_equivalence.str.startswith("net change equivalent")]
        if len(same) and vals[0] in SLICED_SCANS:  # slices of one scan: intervals too narrow
            parts.append(
                "No equivalence verdict on this dataset: its intervals treat slices of one scan as "
                "independent samples, so they are too narrow to show that nothing changed."
            )
        elif len(same):
            parts.append(
                "Net Test accuracy shown unchanged at the 5 % point (90 % interval within +-0.5 "
                "points; fixes may offset breakage: see the Test regression rate): "
                + ", ".join(same.method)
                + "."
            )
        out[" / ".join(str(v) for v in vals)] = " ".join(parts)
    return out


def dataset_notes(datasets: Sequence[str]) -> list[str]:
    """What a reader must know before reading a dataset's figures, in words."""
    return [
        f"{d}: slices of 3D CT scans, with train / val and Test from different scans. Read it as a "
        "distribution-shift case: a regression budget measured on FT-Val or FT-Train does not "
        "bound the damage on Test (see its Test regression rate and Test samples broken per fixed "
        "error), and every interval and McNemar p-value on it treats slices of one scan as independent, "
        "which they are not (too narrow, too small); no equivalence verdict is drawn from them"
        for d in sorted(set(datasets))
        if d in SLICED_SCANS
    ]


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
    out += dataset_notes(summary.dataset)
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
    ev = evidence.tables(summary) if len(summary) else {}
    fig, win = ev.get("evidence", pd.DataFrame()), ev.get("evidence_winners", pd.DataFrame())
    return {
        **ctx,
        "evidence": evidence_table(fig) if len(fig) else pd.DataFrame(),
        "evidence_pairs": ev.get("evidence_pairs", pd.DataFrame()),
        "shared_records": shared,
        "base": base,
        "headline": headline(points) if len(points) else pd.DataFrame(),
        "times": times(summary, points) if len(points) else pd.DataFrame(),
        "findings": findings(fig, win, base) if len(fig) else {},
        "key_energy": keyenergy.key_energy(summary),
    }
