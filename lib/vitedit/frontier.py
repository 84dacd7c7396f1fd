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
from .budget import SHARED_GROUPS
from .evidence import DESIGN_SEEDS

GOAL_DELTA = 0.005  # +0.5 points of Test accuracy (a fraction, as the evidence tables hold it)
GOAL_REGRESSION = 0.005  # <= 0.5 % of Test's correct predictions broken
GOAL_SEEDS = 5  # on >= 5 confirmation seeds (BloodMNIST's)
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
# what else a point carries: an edit built from Edit-Discovery data (not a reference such as the
# retrain), and where it comes from (points of different base models are not on one front)
EXTRA = ["edit", "source"]


def meets_goal(
    delta: float, low: float, regression: float, n_seeds: int, edit: bool = True
) -> bool:
    """Issue 30's bar: an edit's net Test change >= +0.5 points with its interval above 0, at
    <= 0.5 % Test regression, on >= 5 confirmation seeds (fractions)."""
    vals = np.array([delta, low, regression], float)
    return bool(
        edit
        and np.isfinite(vals).all()
        and n_seeds >= GOAL_SEEDS
        and delta >= GOAL_DELTA - 1e-12
        and low > 0
        and regression <= GOAL_REGRESSION + 1e-12
    )


def points(evidence: pd.DataFrame, role: str = "confirmation", source: str = "") -> pd.DataFrame:
    """One row per (dataset, edit selection, method, setting) of ``role`` with a Test estimate
    (a setting chosen at both budgets is one point, its ``budgets`` naming both), with ``goal``
    and ``pareto``; ``source`` names the table (its base models). Refused: a table without the
    evidence columns."""
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
    shared = [k for k in SHARED_GROUPS if k in rows and k != "edit_selection"]  # varied ones
    key = ["dataset", "edit_selection", *shared, "method"]
    key.append("settings" if "settings" in rows else "budget")
    words = lambda b: "<= " + " and ".join(f"{100 * x:g} %" for x in b)  # noqa: E731
    rows["budgets"] = rows.groupby(key, sort=False, dropna=False).budget.transform(words)
    rows = rows.drop_duplicates(key).assign(edit=True, source=source)
    return mark(rows[[*COLUMNS, *shared, "budgets", *EXTRA]].reset_index(drop=True))


def reference(
    dataset: str,
    method: str,
    n_seeds: int,
    test_regression: float,
    test_delta: float,
    ci: Sequence[float],
    edit_selection: str,
    edit: bool = False,
) -> pd.DataFrame:
    """One point from elsewhere than an evidence table, in :func:`points`' columns (fractions):
    a reference that is not an edit (``edit`` false: the retrain) or an edit chosen by another
    rule (issue 30's)."""
    row = dict.fromkeys(COLUMNS, np.nan) | {
        "dataset": dataset,
        "edit_selection": edit_selection,
        "method": method,
        "n_seeds": n_seeds,
        "test_regression": test_regression,
        "test_delta": test_delta,
        "test_delta_low": ci[0],
        "test_delta_high": ci[1],
        "edit": edit,
        "source": "",
    }
    return pd.DataFrame([row], columns=[*COLUMNS, *EXTRA])


def retrain_reference(seeds: pd.DataFrame, edit_selection: str) -> pd.DataFrame:
    """The retrain's point from ``bench_retrain_reference.py``'s per-seed rows (one ``errors``
    kind, fresh seeds only, each once): net Test change pooled over the seeds with its 95 %
    interval (Test shared by the seeds, :func:`vitedit.seedstats.cluster_delta`) and the pooled
    Test regression rate (broken / correct before, summed over the seeds)."""
    kinds = seeds["errors"].unique()
    if len(kinds) != 1:
        raise ValueError(f"retrain rows of several kinds ({', '.join(map(str, kinds))}): pass one")
    design = sorted(set(seeds.seed) & set(DESIGN_SEEDS))
    if design or seeds.seed.duplicated().any():
        raise ValueError(
            f"retrain rows must be fresh seeds, each once (design seeds {design}, duplicated "
            f"{sorted(set(seeds.seed[seeds.seed.duplicated()]))}): pass each seed's row once"
        )
    correct_before = _correct_before(seeds)
    d = seedstats.cluster_delta(seeds.test_fixed, seeds.test_broken, seeds.test_n, shared=True)
    what = "samples" if kinds[0] == "control" else "errors"
    return reference(
        str(seeds.dataset.iloc[0]),
        f"retrain + {kinds[0]} ED {what}",
        len(seeds),
        float(seeds.test_broken.sum() / correct_before),
        float(d["delta"]),
        d["ci95"],
        edit_selection,
    )


def _correct_before(seeds: pd.DataFrame) -> float:
    """Test's correct predictions before, summed over the seeds (rows written before the count was:
    from the regression rate, which a seed with nothing broken cannot give)."""
    given = seeds.get("test_correct_before", pd.Series(np.nan, index=seeds.index))
    need = given.isna()
    if (seeds.test_broken[need] == 0).any():
        raise ValueError(
            "a seed broke nothing and its row has no test_correct_before: rerun "
            "bench_retrain_reference.py (it reuses the checkpoints) to write it"
        )
    derived = seeds.test_broken / (seeds.test_regression_pct / 100)
    return float(given.where(~need, derived).sum())


def choice_points(choices: pd.DataFrame) -> pd.DataFrame:
    """``bench_issue30_choice.py``'s rows (in points and %) as edits on the plane; a method with
    no setting within the rule's budget has no point."""
    out = []
    for r in choices.dropna(subset=["config_id"]).itertuples():
        low, high = (float(v) / 100 for v in str(r.test_delta_ci95).strip("()").split(","))
        label = f"{r.method} (issue 30's rule, <= {100 * r.budget:g} % FT-Val)"
        selection = getattr(r, "edit_selection", params.defaults()["edit_selection"])
        out.append(
            reference(
                r.dataset,
                label,
                int(r.seeds),
                r.test_regression_pct / 100,
                r.test_delta_points / 100,
                (low, high),
                selection,
                edit=True,
            )
        )
    return mark(pd.concat(out, ignore_index=True)) if out else pd.DataFrame()


def mark(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``goal`` (:func:`meets_goal`) and ``pareto``: no other point of its dataset,
    edit selection, varied shared parameters and source has both less Test regression and a
    larger net change (one strictly), on point estimates; a point without both is on no front."""
    df = df.reset_index(drop=True).copy()
    for c, v in (("edit", True), ("source", "")):
        df[c] = df[c].fillna(v) if c in df else v
    df["goal"] = [
        meets_goal(r.test_delta, r.test_delta_low, r.test_regression, r.n_seeds, bool(r.edit))
        for r in df.itertuples()
    ]
    group = [k for k in ("dataset", "edit_selection", *SHARED_GROUPS, "source") if k in df]
    group = list(dict.fromkeys(group))
    r_all, d_all = df.test_regression.to_numpy(float), df.test_delta.to_numpy(float)
    ok = np.isfinite(r_all) & np.isfinite(d_all)
    pareto = np.zeros(len(df), bool)
    for _, g in df.groupby(group, sort=False, dropna=False):
        idx = g.index.to_numpy()[ok[g.index.to_numpy()]]
        r, d = r_all[idx], d_all[idx]
        for i, ri, di in zip(idx, r, d):
            pareto[i] = not np.any((r <= ri) & (d >= di) & ((r < ri) | (d > di)))
    df["pareto"] = pareto
    return df


def plot(df: pd.DataFrame, title: str | None = None):
    """Two panels against Test regression (x, %): the net Test change (points, with its interval;
    issue 30's goal region shaded) and the generalisation to new images of the edited kind (the
    share of Test's errors of the edited confusion pairs fixed; points without it are left out).
    One marker per row (its ``label`` column if any, else method and budget; filled on the Pareto
    front, hollow off it), the legend beside the panels."""
    import matplotlib.pyplot as plt  # lazy: the tables need no matplotlib

    fig, (ax, gx) = plt.subplots(1, 2, figsize=(15, 6))
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
        style = {
            "fmt": "osD^vP*X"[i // 10 % 8],
            "color": f"C{i % 10}",
            "mfc": None if r.pareto else "none",
            "ms": 5,
        }
        x = 100 * r.test_regression
        ax.errorbar(
            x, y, yerr=[[y - lo], [hi - y]], capsize=2, elinewidth=0.8, label=label, **style
        )
        if np.isfinite(r.pair_generalisation):
            gx.plot(x, 100 * r.pair_generalisation, style.pop("fmt"), **style)
    ax.set_ylabel("net Test change (points, paired 95 % interval)")
    ax.set_title(title or "Net Test change against Test regression (confirmation seeds)")
    gx.set_ylabel("Test errors of the edited pairs fixed (%)")
    gx.set_title("What carries over to new images of the kind edited")
    for a in (ax, gx):
        a.set_xlabel("Test regression rate (% of correct Test predictions broken)")
        a.set_xlim(left=0)
    gx.set_ylim(bottom=0)
    fig.legend(
        *ax.get_legend_handles_labels(),
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(0.99, 0.98),
        ncol=1 + (len(df) > 24),
        title="filled: no point of its table has less damage and more gain\n"
        "(on point estimates: a description, nothing is chosen on Test)",
        title_fontsize=7,
    )
    return fig
