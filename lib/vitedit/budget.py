"""Judging methods at a regression budget: the study's headline figure.

For every method the sweep traces a trade-off curve (fix rate on the edited errors against
regression, one point per setting). The headline is **the fix rate at <= 1 % and at <= 5 %
regression**, with the operating point chosen on FT-Val and reported on held-out FT-Train and Test:

- *selection set*: FT-Val (never Test, never the held-out FT-Train the result is reported on). Its
  regression is estimated as the share of the FT-Val samples the model classified correctly
  before the edit that it gets wrong after (``val_regression_rate``), averaged over the seeds of a
  setting. Every setting whose mean is within the budget is eligible; the one with the highest
  mean fix rate wins (ties: lower FT-Val regression, then the setting listed first). With few
  correct FT-Val samples a 1 % budget means *no* FT-Val regression at all: the table gives that
  count (``val_correct``) so the reader sees the estimate's resolution.
- only settings with a result on every seed of the sweep are eligible (``n_incomplete`` counts the
  others).
- *caveats, in the report*: the fix rate that chooses the setting is the one reported (it is the
  quantity "what the method can fix within the budget"), so a method with a larger grid gets more
  tries (``n_settings`` is shown); the retrain baseline picks its epoch on FT-Val, so its FT-Val
  regression is optimistic (its held-out FT-Train and Test figures are not).
- *reported*: at the chosen setting, the fix rate, the regression on held-out FT-Train
  (``proj_regression_rate``) and the Test accuracy change, each as the mean over seeds with a 95 %
  interval that stays in [0, 1] (:data:`COUNTS`: the cluster bootstrap of
  :mod:`vitedit.seedstats`, from the seeds' counts; a Student-t CI only where no counts exist: edit
  time, preservation error), the per-seed McNemar p-values' maximum, and the edit time.

Importable without torch (the sweep's report reads it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .methods import SHARED_KEYS
from .seedstats import cluster_delta, cluster_rate

BUDGETS = (0.01, 0.05)
SELECTION_REGRESSION = "val_regression_rate"
FIX = "edit_fix_ratio"
# reported at the chosen setting as seed means (no CI): the base model, the run's duration, and
# whether the fix carries over to the same confusion on Test and what it costs the classes involved
# (vitedit.evaluation.pair_generalisation)
SEED_MEANS = (
    "test_same_pair_errors",
    "test_same_pair_fix_rate",
    "test_pair_classes_regression_rate",
    "test_acc_before",
    "test_auc_before",
    "duration_seconds",
)
# reported at the chosen setting: mean and 95 % CI over seeds
REPORTED = (
    FIX,
    "proj_regression_rate",
    "val_regression_rate",
    "test_acc_delta",
    "edit_time_seconds",
    "preservation_insample",
)


# a reported rate -> its (successes, trials) columns, and whether every seed measured it on the
# same samples (FT-Val, Test); test_acc_delta -> (gained, lost, total). vitedit.evidence reads the
# same pairs for its figures
COUNTS = {
    FIX: ("edit_num_fixed", "edit_total_wrong", False),
    "proj_regression_rate": ("proj_correct_to_wrong", "proj_correct_before", False),
    SELECTION_REGRESSION: ("val_correct_to_wrong", "val_correct_before", True),
    "test_acc_delta": ("test_wrong_to_correct", "test_correct_to_wrong", "test_total"),
}


def interval(seeds: pd.DataFrame, c: str, level: float = 0.95) -> tuple[float, float, float]:
    """Mean over the seeds' rows of the reported column ``c`` and its 95 % interval: from the
    seeds' counts (:data:`COUNTS`) where every row has them, else a Student-t interval."""
    v = seeds[c].astype(float).to_numpy() if c in seeds else np.array([])
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
    cols = COUNTS.get(c)
    if cols and all(x in seeds for x in cols[:2]) and len(seeds):
        a, b = (pd.to_numeric(seeds[x], errors="coerce").to_numpy(float) for x in cols[:2])
        if c == "test_acc_delta" and cols[2] in seeds:
            t = pd.to_numeric(seeds[cols[2]], errors="coerce").to_numpy(float)
            if np.isfinite([a, b, t]).all() and (t > 0).all():
                lo, hi = cluster_delta(a, b, t, levels=(level,), shared=True)[
                    f"ci{round(level * 100)}"
                ]
                return mean, lo, hi
        elif c != "test_acc_delta" and np.isfinite([a, b]).all() and (b > 0).all():
            _, lo, hi = cluster_rate(a, b, level=level, shared=cols[2], pooled=False)
            return mean, lo, hi
    half = t_half_width(v, level)
    return mean, mean - half, mean + half


def t_half_width(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the Student-t CI of the mean of the finite ``values`` (NaN for fewer than 2):
    the one CI of the project (seeds, tracing layers, budget points)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return float("nan")
    # lazy: scipy.stats costs ~1 s at import; only the report's tables need it
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


# the method registry's shared parameters (which errors are edited, which samples build the
# statistics): a setting is compared only with settings that share their values, so no method is
# ever judged on other errors than the ones it is ranked with. Those the sweep varies become groups.
SHARED_GROUPS = SHARED_KEYS
# a layer ranking that a sweep compares as an option is reported as its own row ("alphaedit
# [region_max]"), not folded into the method's grid (which would give the method more tries); so is
# an ablation run in a method's grid ("head_guarded[no_guard]": head_keep_weight 0)
# parameter -> {value as a string: the row's label}
VARIANTS = {
    "rank_scope": {"region_max": "region_max"},
    "head_keep_weight": {"0.0": "no_guard", "0": "no_guard"},
}


def group_keys(summary: pd.DataFrame) -> list[str]:
    """``dataset`` and the shared parameters the sweep varies (older sweeps vary none)."""
    varied = [
        k
        for k in SHARED_GROUPS
        if k in summary.columns and summary[k].astype(str).nunique(dropna=False) > 1
    ]
    return ["dataset", *varied]


def _with_groups(summary: pd.DataFrame) -> pd.DataFrame:
    """Shared parameters as plain strings (``None`` kept as 'None' so that groupby keeps it), and
    method variants renamed (``alphaedit[region_max]``)."""
    if "_grouped" in summary.attrs:
        return summary
    out = summary.copy()
    for k in SHARED_GROUPS:
        if k in out.columns:
            out[k] = out[k].astype(object).where(out[k].notna(), None).astype(str)
    if "edit_selection" in out.columns:
        out["edit_selection"] = out.edit_selection.replace({"None": "first", "nan": "first"})
    for k, labels in VARIANTS.items():
        if k in out.columns and "method" in out.columns:
            value = out[k].astype(str)
            hit = value.isin(list(labels))
            out.loc[hit, "method"] = out.loc[hit, "method"] + "[" + value[hit].map(labels) + "]"
    out.attrs["_grouped"] = True
    return out


def settings_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, shared choice, method, setting): the seed means of the selection and
    reported columns."""
    summary = _with_groups(summary)
    ok = summary[summary.status == "ok"] if "status" in summary else summary
    keys = group_keys(summary)
    rows = []
    for vals, g in ok.groupby([*keys, "method", "config_id"], sort=False):
        row = dict(zip([*keys, "method", "config_id"], vals))
        row["n_seeds"] = len(g)
        row["index"] = int(g["index"].min()) if "index" in g else 0
        for c in (*REPORTED, "val_total", "val_acc_before"):
            row[c] = g[c].astype(float).mean() if c in g else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def best(table: pd.DataFrame, budget: float) -> pd.Series | None:
    """The selection rule, the one place it lives: among settings (rows of :func:`settings_table`)
    whose mean FT-Val regression is within ``budget``, the highest mean fix rate (ties: lower FT-Val
    regression, then the setting listed first); None when no setting is within the budget."""
    eligible = table[table[SELECTION_REGRESSION] <= budget + 1e-12]
    if not len(eligible):
        return None
    order = [FIX, SELECTION_REGRESSION, "index"]
    return eligible.sort_values(order, ascending=[False, True, True]).iloc[0]


def operating_points(
    summary: pd.DataFrame, budgets: Sequence[float] = BUDGETS, level: float = 0.95
) -> pd.DataFrame:
    """Per dataset, method and budget: the setting chosen on FT-Val regression and what it reaches.

    ``summary``: one row per experiment (the sweep's ``param_search_summary`` columns: ``dataset``,
    ``method``, ``config_id``, ``seed``, ``status`` and the metrics). A method with no setting
    within a budget gets a row saying so (``config_id`` empty, figures NaN), never a number.
    """
    summary = _with_groups(summary)
    ok = summary[summary.status == "ok"] if "status" in summary else summary
    if ok.empty:  # nothing succeeded: no setting reaches anything
        return pd.DataFrame()
    table = settings_table(summary)
    keys = group_keys(summary)
    rows = []
    # the seeds each group (dataset and shared choice, e.g. edit_selection) was run on: a group
    # may have fewer seeds than its dataset's other groups (the pair mode on one seed)
    seeds_of = ok.groupby(keys, dropna=False).seed.nunique() if "seed" in ok else None
    for vals, g in table.groupby([*keys, "method"], sort=False):
        group = dict(zip([*keys, "method"], vals))
        ds = group["dataset"]
        gkey = tuple(vals[: len(keys)]) if len(keys) > 1 else vals[0]
        # a setting is judged only on every seed of its group: one that failed on some seeds
        # would be judged on the lucky ones
        need = int(seeds_of[gkey]) if seeds_of is not None else 1  # every group has ok runs
        complete = g[g.n_seeds >= need]
        for budget in budgets:
            row = {**group, "budget": budget, "n_settings": len(g)}
            row["n_incomplete"] = len(g) - len(complete)
            chosen = best(complete, budget)
            if chosen is None:
                row["config_id"] = ""
                row["note"] = f"no setting keeps FT-Val regression <= {budget:.0%}"
                rows.append(row)
                continue
            seeds = ok[(ok.config_id == chosen.config_id) & (ok.dataset == ds)]
            for k in keys[1:]:
                seeds = seeds[seeds[k] == group[k]]
            row.update({"config_id": chosen.config_id, "n_seeds": len(seeds), "note": ""})
            if "experiment" in seeds:
                row["experiments"] = " ".join(seeds.experiment)
            correct = seeds.val_total * seeds.val_acc_before if "val_total" in seeds else None
            row["val_correct"] = float(correct.mean()) if correct is not None else np.nan
            for c in REPORTED:
                row[c], row[f"{c}_ci_low"], row[f"{c}_ci_high"] = interval(seeds, c, level)
            p = seeds["test_mcnemar_p"].astype(float) if "test_mcnemar_p" in seeds else None
            row["test_mcnemar_p_max"] = float(p.max()) if p is not None and len(p) else np.nan
            for c in SEED_MEANS:
                v = seeds[c].astype(float).to_numpy() if c in seeds else np.array([])
                row[c] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def headline(points: pd.DataFrame) -> pd.DataFrame:
    """The headline table: one row per (dataset, method), 'mean [low, high]' per budget."""

    def cell(r, c):
        if not r.get("config_id"):
            return "none within budget"
        lo, hi = r[f"{c}_ci_low"], r[f"{c}_ci_high"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else " (1 seed)"
        return f"{r[c]:.3f}{ci}"

    out = {}
    keys = group_keys(points)
    for _, r in points.iterrows():
        key = (*(r[k] for k in keys), r.method)
        b = f"{r.budget:.0%}"
        out.setdefault(key, {})[f"fix rate @ <= {b}"] = cell(r, FIX)
        out[key][f"training-set regression @ <= {b}"] = cell(r, "proj_regression_rate")
        out[key][f"Test delta @ <= {b}"] = cell(r, "test_acc_delta")
    df = pd.DataFrame.from_dict(out, orient="index")
    df.index.names = [*keys, "method"]
    return df
