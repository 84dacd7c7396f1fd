"""Where every method lands on issue 30's plane: net Test change against Test regression.

Issue 30 asks for an edit that raises Test accuracy by >= 0.5 points (paired 95 % interval above 0)
at <= 0.5 % Test regression, and, if none does, for the frontier every method reaches. This module
reads the evidence tables (:func:`vitedit.evidence.tables`: each method's figures on the
confirmation seeds at the setting the design seeds chose, per budget) and puts every method, budget
and edit selection on one plane: the Test regression rate (what it breaks of what Test got right, on
data no model trained on) against the net Test change with its paired interval, beside what says
whether the fixes carry over (the other fold's errors, the errors not edited, Test's errors of the
edited pairs) and the Test samples broken per error fixed.

- ``goal``: the point meets issue 30's bar;
- ``pareto``: no other point of its dataset and edit selection has both less Test regression and a
  larger net change (one of them strictly). A description of the plane: nothing is chosen on
  Test, and the points are already out of selection.

A reference that is not an edit (the retrain on FT-Train plus the errors,
``benchmarks/bench_retrain_reference.py``) joins the plane through :func:`reference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import params, seedstats

GOAL_DELTA = 0.005  # +0.5 points of Test accuracy (a fraction, as the evidence tables hold it)
GOAL_REGRESSION = 0.005  # <= 0.5 % of Test's correct predictions broken
GROUP = ("dataset", "edit_selection")
COLUMNS = [
    "dataset",
    "edit_selection",
    "method",
    "budget",
    "n_seeds",
    "test_regression",
    "test_delta",
    "test_delta_low",
    "test_delta_high",
    "test_broken_per_fix",
    "crossfit_generalisation",
    "generalisation",
    "pair_generalisation",
]


def points(evidence: pd.DataFrame, role: str = "confirmation") -> pd.DataFrame:
    """One row per (dataset, edit selection, method, budget) of ``role`` with a Test estimate, with
    ``goal`` and ``pareto``. Refused: a table without the evidence columns."""
    if "edit_selection" not in evidence:  # a sweep that ran one selection writes no column
        evidence = evidence.assign(edit_selection=params.defaults()["edit_selection"])
    missing = [c for c in (*COLUMNS, "role") if c not in evidence]
    if missing:
        raise ValueError(
            f"not an evidence table (vitedit.evidence.tables): no {', '.join(missing)}; pass "
            "evidence.csv of a sweep folder or of reports/benchmark/"
        )
    rows = evidence[
        (evidence.role == role) & evidence.test_delta.notna() & evidence.test_regression.notna()
    ].copy()
    # one point per setting: a setting chosen at both budgets is one point, labelled with both
    key = [*GROUP, "method", "settings" if "settings" in rows else "budget"]
    words = lambda b: "<= " + " and ".join(f"{100 * x:g} %" for x in b)  # noqa: E731
    rows["budgets"] = rows.groupby(key, sort=False).budget.transform(words)
    rows = rows.drop_duplicates(key)
    return mark(rows[[*COLUMNS, "budgets"]].reset_index(drop=True))


def reference(
    dataset: str,
    method: str,
    n_seeds: int,
    test_regression: float,
    test_delta: float,
    ci: Sequence[float],
    edit_selection: str = "all",
) -> pd.DataFrame:
    """One point that is not an edit (e.g. the retrain), in :func:`points`' columns (fractions)."""
    row = dict.fromkeys(COLUMNS, np.nan) | {
        "dataset": dataset,
        "edit_selection": edit_selection,
        "method": method,
        "n_seeds": n_seeds,
        "test_regression": test_regression,
        "test_delta": test_delta,
        "test_delta_low": ci[0],
        "test_delta_high": ci[1],
    }
    return pd.DataFrame([row], columns=COLUMNS)


def retrain_reference(seeds: pd.DataFrame, edit_selection: str) -> pd.DataFrame:
    """The retrain's point from ``bench_retrain_reference.py``'s per-seed rows (one ``errors``
    kind): net Test change pooled over the seeds with its 95 % interval (Test shared by the seeds,
    :func:`vitedit.seedstats.cluster_delta`) and the pooled Test regression rate."""
    kinds = seeds["errors"].unique()
    if len(kinds) != 1:
        raise ValueError(f"retrain rows of several kinds ({', '.join(map(str, kinds))}): pass one")
    d = seedstats.cluster_delta(seeds.test_fixed, seeds.test_broken, seeds.test_n, shared=True)
    correct_before = (seeds.test_broken / (seeds.test_regression_pct / 100)).sum()
    return reference(
        str(seeds.dataset.iloc[0]),
        f"retrain + {kinds[0]} ED {'samples' if kinds[0] == 'control' else 'errors'}",
        int(seeds.seed.nunique()),
        float(seeds.test_broken.sum() / correct_before),
        float(d["delta"]),
        d["ci95"],
        edit_selection,
    )


def mark(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``goal`` and ``pareto`` (see the module); ``pareto`` within each dataset and
    edit selection."""
    df = df.copy()
    df["goal"] = (
        (df.test_delta >= GOAL_DELTA - 1e-12)
        & (df.test_delta_low > 0)
        & (df.test_regression <= GOAL_REGRESSION + 1e-12)
    )
    df["pareto"] = False
    for _, g in df.groupby(list(GROUP), sort=False):
        r, d = g.test_regression.to_numpy(), g.test_delta.to_numpy()
        beaten = [
            bool(np.any((r <= ri) & (d >= di) & ((r < ri) | (d > di)))) for ri, di in zip(r, d)
        ]
        df.loc[g.index, "pareto"] = ~np.array(beaten)
    return df


def plot(df: pd.DataFrame, ax=None, title: str | None = None):
    """The plane: Test regression (x, %) against net Test change (y, points) with its interval,
    one marker per row (its ``label`` column if any, else method and budget; circles on the Pareto
    front), issue 30's goal region shaded, the legend beside the axes."""
    import matplotlib.pyplot as plt  # lazy: the tables need no matplotlib

    if ax is None:
        _, ax = plt.subplots(figsize=(12, 6))
    top = max(100 * GOAL_DELTA + 0.5, 100 * df.test_delta_high.max() + 0.2)
    ax.fill_between(
        [0, 100 * GOAL_REGRESSION],
        100 * GOAL_DELTA,
        top,
        color="tab:green",
        alpha=0.15,
        label="issue 30's goal: >= +0.5 points, interval above 0, <= 0.5 % Test regression",
    )
    ax.axhline(0, color="grey", lw=0.8)
    for i, r in enumerate(df.itertuples()):
        y, lo, hi = 100 * r.test_delta, 100 * r.test_delta_low, 100 * r.test_delta_high
        label = getattr(r, "label", None)
        if not isinstance(label, str):
            budgets = getattr(r, "budgets", None)
            label = r.method + (f" {budgets}" if isinstance(budgets, str) else "")
        ax.errorbar(
            100 * r.test_regression,
            y,
            yerr=[[y - lo], [hi - y]],
            fmt="o" if r.pareto else "s",
            color=f"C{i % 10}",
            ms=5,
            capsize=2,
            elinewidth=0.8,
            label=label,
        )
    ax.set_xlabel("Test regression rate (% of correct Test predictions broken)")
    ax.set_ylabel("net Test change (points, paired 95 % interval)")
    ax.set_xlim(left=0)
    ax.set_title(title or "Net Test change against Test regression (confirmation seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + (len(df) > 24))
    return ax.figure
