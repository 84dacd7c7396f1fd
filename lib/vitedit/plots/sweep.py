"""Figures of notebooks 08 and 09: a sweep's trade-offs, budget curves and parameter effects."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import _save, method_colors


def pareto_front(fix: np.ndarray, regression: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (fix at least as high and regression at least as
    low, one of them strictly); NaN points are never on the front."""
    fix, reg = np.asarray(fix, float), np.asarray(regression, float)
    ok = np.isfinite(fix) & np.isfinite(reg)
    front = np.zeros(len(fix), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (fix >= fix[i]) & (reg <= reg[i]) & ((fix > fix[i]) | (reg < reg[i]))
        front[i] = not dominated.any()
    return front


def sweep_pareto(
    summary: pd.DataFrame, chosen: pd.DataFrame | None = None, path: Path | None = None
):
    """Every configuration's fix rate vs held-out FT-Train regression, by method; the Pareto front
    joined by a line, the chosen configuration of each method ringed."""
    ok = summary[summary.status == "ok"]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    methods = list(dict.fromkeys(ok.method))
    colors = method_colors(methods)
    for m in methods:
        g = ok[ok.method == m]
        ax.scatter(
            g.proj_regression_rate, g.edit_fix_ratio, s=28, alpha=0.75, color=colors[m], label=m
        )
    front = pareto_front(ok.edit_fix_ratio, ok.proj_regression_rate)
    f = ok[front].sort_values("proj_regression_rate")
    ax.plot(f.proj_regression_rate, f.edit_fix_ratio, "k--", lw=0.8, label="Pareto front")
    if chosen is not None and len(chosen):
        for _, r in ok[ok.config_id.isin(set(chosen.config_id))].iterrows():
            ax.scatter(
                r.proj_regression_rate,
                r.edit_fix_ratio,
                s=140,
                facecolors="none",
                edgecolors=colors.get(r.method, "k"),
                linewidths=1.6,
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regression on held-out FT-Train (lower is better)")
    ax.set_ylabel("fix rate on the edited errors (higher is better)")
    ax.set_title("every configuration (ringed: chosen on FT-Val)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def budget_curves(
    settings: pd.DataFrame, points: pd.DataFrame, path: Path | None = None, title: str = ""
):
    """Every method's trade-off curve on one plot: one point per setting (mean over seeds) of fix
    rate against held-out FT-Train regression, each method's own Pareto front joined; the settings
    chosen on FT-Val at each regression budget are starred (their budget in the legend)."""
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    methods = list(dict.fromkeys(settings.method))
    colors = method_colors(methods)
    markers = dict(zip(sorted(points.budget.unique()) if len(points) else [], "*PX^v"))
    for m in methods:
        g = settings[settings.method == m]
        ax.scatter(g.proj_regression_rate, g.edit_fix_ratio, s=18, alpha=0.5, color=colors[m])
        front = g[pareto_front(g.edit_fix_ratio, g.proj_regression_rate)]
        front = front.sort_values("proj_regression_rate")
        ax.plot(front.proj_regression_rate, front.edit_fix_ratio, "-", color=colors[m], label=m)
        for _, r in points[(points.method == m) & (points.config_id != "")].iterrows():
            ax.scatter(
                r.proj_regression_rate,
                r.edit_fix_ratio,
                s=170,
                marker=markers[r.budget],
                color=colors[m],
                edgecolors="k",
                linewidths=0.7,
                zorder=5,
            )
    for b, mk in markers.items():
        ax.scatter(
            [], [], marker=mk, s=120, color="w", edgecolors="k", label=f"chosen at <= {b:.0%}"
        )
        ax.axvline(b, color="grey", lw=0.6, ls=":")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regression on held-out FT-Train (symlog; dotted: the budgets)")
    ax.set_ylabel("fix rate on the edited errors (mean over seeds)")
    ax.set_title(
        (f"{title}: " if title else "") + "trade-off per method (budget points chosen on FT-Val)"
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def metric_vs_param(
    summary: pd.DataFrame,
    param: str,
    metrics=("edit_fix_ratio", "proj_regression_rate", "val_acc_delta", "test_acc_delta"),
    path: Path | None = None,
):
    """Mean of each metric per value of one searched parameter (other parameters averaged), one
    line per method. Test appears for reporting; the selection uses the others."""
    ok = (
        summary[(summary.status == "ok") & summary[param].notna()].copy()
        if param in summary
        else summary.iloc[:0]
    )
    metrics = [m for m in metrics if m in ok]
    fig, axes = plt.subplots(
        1, max(1, len(metrics)), figsize=(3.3 * max(1, len(metrics)), 3), squeeze=False
    )
    if len(ok):
        ok["_x"] = ok[param].astype(str)
        order = sorted(ok["_x"].unique(), key=lambda v: (float(v) if _is_number(v) else np.inf, v))
        pos = {v: i for i, v in enumerate(order)}
        for ax, m in zip(axes[0], metrics):
            for meth, g in ok.groupby("method", sort=False):
                s = g.groupby("_x")[m].mean()
                xs = sorted(s.index, key=pos.get)
                ax.plot([pos[x] for x in xs], [s[x] for x in xs], "o-", ms=4, label=meth)
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels(order, fontsize=7, rotation=30)
            ax.set_xlabel(param)
            ax.set_ylabel(f"mean {m}", fontsize=8)
            ax.set_title(m + (" (reported only)" if m.startswith("test_") else ""), fontsize=9)
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
