"""Evidence a reviewer accepts: out-of-selection operating points, figures on data the model never
trained on, intervals over seeds and errors, paired comparisons with a multiplicity correction.

- **Out of selection.** A method's setting at a budget is chosen by :func:`vitedit.budget.best`
  (FT-Val regression within the budget, then the highest fix rate) on *other* seeds than the one
  it is reported on: a confirmation seed (not in :data:`DESIGN_SEEDS`) is reported at the setting
  the design seeds chose; a design seed at the setting the other design seeds chose
  (leave-one-seed-out). The best-of-grid figures of :mod:`vitedit.budget` are in-sample and are
  labelled so wherever they appear.
- **Figures** (:data:`FIGURES`), generalisation and damage first: the fix rate on Edit-Discovery
  errors that were not edited and on Test errors of the edited confusion pairs; the Test and FT-Val
  regression rates (correct -> wrong / correct before); the fix rate on the edited errors (in-sample
  by nature); the training-set regression (held-out FT-Train: the model trained on those samples).
  Net Test change with its interval, and an equivalence verdict (the 90 % interval inside
  +-:data:`EQUIVALENCE_MARGIN`, i.e. TOST at 5 %) before any text says an edit costs nothing.
- **Intervals** stay in [0, 1]: a two-stage cluster bootstrap (seeds with replacement, then the
  samples within each seed, from its counts; on FT-Val and Test, which every seed shares, with one
  sample's noise, not S independent ones').
- **Paired comparisons** between methods on the errors they share (same seed, same edited errors:
  equal ``edit_errors_digest``), over the reported seeds: the exact McNemar test on the pooled
  shared errors (errors as the units, conditional on each seed's trained models), with Holm's
  adjustment over every comparison of a dataset; beside it the exact sign-flip test with the seed
  as the unit (one edit fixes a seed's errors together), whose floor of 2 / 2^S keeps few seeds
  from rejecting. A winner is named only when every comparison with another method favours it at
  Holm-adjusted p < 0.05, it fixes more on at least three seeds and fewer on none.

Importable without torch (the sweep's report reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from . import budget, methods
from .crossfit import SWAP, _mask, crossfit, is_swap, swap_of  # noqa: F401 (re-exported)
from .paired import mcnemar_exact
from .seedstats import cluster_delta, cluster_rate, holm, sign_flip

# chose the defaults, grids and recipes (issue 27): their figures are design figures, reported by
# leave-one-seed-out; claims are confirmed on other seeds, which chose nothing
DESIGN_SEEDS = (42, 43, 44)
# "costs nothing on Test" needs the 90 % interval of the net Test change inside +-0.5 points
EQUIVALENCE_MARGIN = 0.005
ALPHA = 0.05
# a winner fixes more than each other method on at least this many independently trained models
# (seeds), and fewer on none: one or two seeds (or one seed with many discordant errors) say little
# about the method
MIN_WINNER_SEEDS = 3
# figure -> (successes column, trials column, label); in the order the reports show them
FIGURES = {
    "generalisation": (
        "ed_rest_wrong_to_correct",
        "ed_rest_errors",
        "fix rate on Edit-Discovery errors not edited",
    ),
    # each of two folds of errors judged once, by the edit that did not see it (:func:`crossfit`)
    "crossfit_generalisation": (
        "crossfit_fixed",
        "crossfit_errors",
        "cross-fit fix rate: each fold's edit on the other fold's errors",
    ),
    "rest_regression": (
        "ed_rest_correct_to_wrong",
        "ed_rest_correct_before",
        "regression on Edit-Discovery samples not edited",
    ),
    "pair_generalisation": (
        "test_same_pair_wrong_to_correct",
        "test_same_pair_errors",
        "fix rate on Test errors of the edited confusion pairs",
    ),
    "test_regression": ("test_correct_to_wrong", "test_correct_before", "Test regression rate"),
    # the in-sample table's counts of the same rates (vitedit.budget.COUNTS: one place)
    "val_regression": (*budget.COUNTS[budget.SELECTION_REGRESSION][:2], "FT-Val regr. (selection)"),
    "efficacy": (*budget.COUNTS[budget.FIX][:2], "fix rate on the edited errors (in-sample)"),
    "train_regression": (
        *budget.COUNTS["proj_regression_rate"][:2],
        "training-set regression (held-out FT-Train, trained on)",
    ),
}
# figures measured on samples every seed shares (the official FT-Val and Test splits): their
# sampling noise does not average out over seeds (vitedit.seedstats.cluster_rate's ``shared``)
SHARED_SAMPLES = frozenset({"pair_generalisation", "test_regression", "val_regression"})
# figures on the Edit-Discovery samples not edited: not out of sample for a method that reads them
# (Method.reads_edit_discovery_rest): left out of its rows
REST_FIGURES = ("generalisation", "crossfit_generalisation", "rest_regression")


def reads_rest(method: str) -> bool:
    """Whether ``method`` (or the method of a variant row, ``name[variant]``) reads the
    Edit-Discovery samples not edited (:attr:`vitedit.methods.Method.reads_edit_discovery_rest`)."""
    base = str(method).split("[")[0]
    return base in methods.REGISTRY and methods.get(base).reads_edit_discovery_rest


# the per-error outcomes a paired comparison reads, per figure
MASKS = {
    "efficacy": "edit_fixed_mask",
    "generalisation": "ed_rest_fixed_mask",
    "crossfit_generalisation": "crossfit_fixed_mask",
}
# the errors each paired comparison is on, in the reports' words
MASK_WORDS = {
    "efficacy": "edited errors",
    "generalisation": "errors not edited",
    "crossfit_generalisation": "other fold's errors (cross-fit)",
}


def _seed_rows(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    summary = budget._with_groups(summary)
    ok = summary[summary.status == "ok"] if "status" in summary else summary
    return ok, budget.group_keys(summary)


def choosers(seed: int, have, design_seeds: Sequence[int] = DESIGN_SEEDS) -> list[int]:
    """The seeds that choose ``seed``'s setting, of those with results (``have``): the other design
    seeds for a design seed (leave-one-seed-out), the design seeds for a fresh one."""
    return sorted(({int(s) for s in design_seeds} - {int(seed)}) & {int(s) for s in have})


def chosen_setting(g: pd.DataFrame, chooser: Sequence[int], b: float):
    """The setting one method's rows ``g`` (one group) choose on seeds ``chooser`` at budget ``b``:
    :func:`vitedit.budget.best` among the settings with a result on every one of those seeds, or
    None. The one rule of the evidence tables and of the sweep's fresh-seed plan."""
    table = budget.settings_table(g[g.seed.isin(list(chooser))])
    return budget.best(table[table.n_seeds >= len(chooser)], b)


def out_of_selection(
    summary: pd.DataFrame,
    budgets: Sequence[float] = budget.BUDGETS,
    design_seeds: Sequence[int] = DESIGN_SEEDS,
) -> pd.DataFrame:
    """One row per (group, method, budget, reported seed): the setting chosen without that seed
    (``chosen_on``), and that seed's result at it (every column of its summary row).

    ``role`` is ``confirmation`` (chosen on the design seeds) or ``design`` (leave-one-seed-out
    among them). A seed with no other seed to choose on, or whose chosen setting did not run on it,
    gets a row with a ``note`` and no figures.
    """
    ok, keys = _seed_rows(summary)
    swaps, ok = ok[is_swap(ok)], ok[~is_swap(ok)]  # a swap is reported beside its twin
    # shared parameters the sweep does not vary are no group: a row that carries only its note
    # must fall in the same group as its method's other rows
    unvaried = set(budget.SHARED_GROUPS) - set(keys)
    design = {int(s) for s in design_seeds}
    rows = []
    for vals, g in ok.groupby([*keys, "method"], sort=False):
        group = dict(zip([*keys, "method"], vals if isinstance(vals, tuple) else (vals,)))
        seeds = sorted(int(s) for s in g.seed.unique())
        for seed in seeds:
            chooser = choosers(seed, seeds, design_seeds)
            role = "design" if seed in design else "confirmation"
            for b in budgets:
                row = {**group, "budget": b, "seed": seed, "role": role}
                row["chosen_on"] = " ".join(map(str, chooser))
                if not chooser:
                    rows.append({**row, "config_id": "", "note": "no other seed to choose on"})
                    continue
                best = chosen_setting(g, chooser, b)
                if best is None:
                    note = f"no setting keeps FT-Val regression <= {b:.0%} on seeds {chooser}"
                    rows.append({**row, "config_id": "", "note": note})
                    continue
                hit = g[(g.config_id == best.config_id) & (g.seed == seed)]
                if hit.empty:
                    note = f"the setting chosen ({best.config_id}) has no result on seed {seed}"
                    rows.append({**row, "config_id": best.config_id, "note": note})
                    continue
                got = {k: v for k, v in hit.iloc[0].items() if k not in unvaried}
                got |= crossfit(got, swap_of(swaps, best.config_id, seed, group["method"]))
                rows.append({**got, **row, "config_id": best.config_id, "note": ""})
    return pd.DataFrame(rows)


def _counts(rows: pd.DataFrame, k: str, n: str) -> tuple[np.ndarray, np.ndarray]:
    kk = pd.to_numeric(rows.get(k, pd.Series(np.nan, index=rows.index)), errors="coerce")
    nn = pd.to_numeric(rows.get(n, pd.Series(np.nan, index=rows.index)), errors="coerce")
    keep = np.isfinite(kk) & np.isfinite(nn) & (nn > 0)
    return kk[keep].to_numpy(float), nn[keep].to_numpy(float)


def equivalence(ci90: tuple[float, float], margin: float = EQUIVALENCE_MARGIN) -> str:
    """TOST at 5 % from the 90 % interval: 'equivalent' only when it lies inside +-margin."""
    lo, hi = ci90
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no estimate"
    if -margin < lo and hi < margin:  # net: fixes can hide breakage (see the regression rates)
        return f"net change equivalent to none (within +-{margin * 100:.1f} points)"
    if hi < -margin or lo > margin:
        return f"a change beyond +-{margin * 100:.1f} points"
    return "not shown equivalent (the interval reaches beyond the margin)"


def figures(oos: pd.DataFrame, n_boot: int = 4000) -> pd.DataFrame:
    """One row per (group, method, budget, role): every :data:`FIGURES` entry pooled over the
    reported seeds with its cluster-bootstrap interval, the net Test change with 95 % and 90 %
    intervals and the equivalence verdict, the seeds reported and the settings they used."""
    if oos.empty:
        return pd.DataFrame()
    keys = [c for c in oos.columns if c in ("dataset", *budget.SHARED_GROUPS)]
    rows = []
    for vals, g in oos.groupby([*keys, "method", "budget", "role"], sort=False, dropna=False):
        row = dict(zip([*keys, "method", "budget", "role"], vals))
        done = g[g.config_id.astype(str).ne("") & g.note.eq("")]
        row["n_seeds"] = len(done)
        row["seeds"] = " ".join(str(int(s)) for s in done.seed)
        row["settings"] = " ".join(sorted(set(done.config_id)))
        row["note"] = "; ".join(sorted(set(g.note[g.note.ne("")])))
        if reads_rest(row["method"]):
            row["caveat"] = (
                "it reads the Edit-Discovery samples not edited: its figures on them are left out"
            )
        for name, (k, n, _) in FIGURES.items():
            kk, nn = _counts(done, k, n)  # the seeds that have both counts (NaN: left out)
            if name in REST_FIGURES and reads_rest(row["method"]):
                kk, nn = kk[:0], nn[:0]
            shared = name in SHARED_SAMPLES
            row[name], row[f"{name}_low"], row[f"{name}_high"] = cluster_rate(
                kk, nn, n_boot, shared=shared
            )
            row[f"{name}_n"], row[f"{name}_seeds"] = float(nn.sum()), len(nn)
        cols = ("test_wrong_to_correct", "test_correct_to_wrong", "test_total", "edit_num_fixed")
        nan = pd.Series(np.nan, index=done.index)
        num = pd.DataFrame({c: pd.to_numeric(done.get(c, nan), errors="coerce") for c in cols})
        num = num[np.isfinite(num.to_numpy(float)).all(1) & (num.test_total > 0)]
        gained, lost, total, fixed = (num[c].to_numpy(float) for c in cols)
        row["test_delta_seeds"] = len(num)  # the seeds with every Test count
        # damage per fixed error: Test samples broken for each edited error fixed (pooled)
        row["test_broken_per_fix"] = float(lost.sum() / fixed.sum()) if fixed.sum() > 0 else np.nan
        d = cluster_delta(gained, lost, total, n_boot, shared=True)  # every seed's Test
        row["test_delta"] = d["delta"]
        row["test_delta_low"], row["test_delta_high"] = d["ci95"]
        row["test_delta_equivalence"] = equivalence(d["ci90"])
        rows.append(row)
    return pd.DataFrame(rows)


def paired(oos: pd.DataFrame, figure: str = "efficacy") -> pd.DataFrame:
    """Every pair of methods of a (group, budget, role) on the errors both were judged on (the same
    seed and ``edit_errors_digest``), over the seeds both report: ``a_only`` / ``b_only`` errors
    fixed by one and not the other (``seeds_a_ahead`` / ``seeds_b_ahead``: seeds where one fixed
    more), ``p`` the exact McNemar test on the pooled errors (errors as units, given each seed's
    models), ``p_holm`` Holm's adjustment of ``p`` over every row, ``p_seeds`` the exact sign-flip
    test over seeds (:func:`vitedit.seedstats.sign_flip`: seeds as units, floor 2 / 2^S)."""
    col = MASKS[figure]
    if oos.empty or col not in oos:
        return pd.DataFrame()
    keys = [c for c in oos.columns if c in ("dataset", *budget.SHARED_GROUPS)]
    done = oos[oos.config_id.astype(str).ne("") & oos.note.eq("")]
    rows = []
    for vals, g in done.groupby([*keys, "budget", "role"], sort=False, dropna=False):
        base = dict(zip([*keys, "budget", "role"], vals))
        by = {
            m: gm.set_index("seed")
            for m, gm in g.groupby("method", sort=False)
            if not (figure in REST_FIGURES and reads_rest(m))  # not out of sample: no comparison
        }
        for a, b in combinations(sorted(by), 2):
            ma, mb, seeds, per_a, per_b = [], [], [], [], []
            for s in sorted(set(by[a].index) & set(by[b].index)):
                ra, rb = by[a].loc[s], by[b].loc[s]
                da, db = ra.get("edit_errors_digest"), rb.get("edit_errors_digest")
                if not isinstance(da, str) or not da or da != db:
                    continue  # not known to be the same errors: never compared
                xa, xb = _mask(ra.get(col)), _mask(rb.get(col))
                if xa is None or xb is None or len(xa) != len(xb):
                    continue
                ma.append(xa), mb.append(xb), seeds.append(s)
                per_a.append(int((xa & ~xb).sum())), per_b.append(int((~xa & xb).sum()))
            if not seeds:
                continue
            xa, xb = np.concatenate(ma), np.concatenate(mb)
            rows.append(
                {
                    **base,
                    "figure": figure,
                    "method_a": a,
                    "method_b": b,
                    "seeds": " ".join(map(str, seeds)),
                    "errors": len(xa),
                    "rate_a": float(xa.mean()),
                    "rate_b": float(xb.mean()),
                    "a_only": sum(per_a),
                    "b_only": sum(per_b),
                    "seeds_a_ahead": int(sum(x > y for x, y in zip(per_a, per_b))),
                    "seeds_b_ahead": int(sum(x < y for x, y in zip(per_a, per_b))),
                    "p": mcnemar_exact(xa, xb)["p_value"],
                    "p_seeds": sign_flip(np.subtract(per_a, per_b)),
                }
            )
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out.p)
    return out


def winners(fig: pd.DataFrame, pairs: pd.DataFrame, figure: str = "efficacy") -> pd.DataFrame:
    """Per (group, budget, role): the method with the highest ``figure`` is named the winner only
    when every paired comparison with another method favours it at Holm-adjusted p < ALPHA (``p_holm``
    of the pairs table: one family, every comparison shown), it fixes more on at least
    :data:`MIN_WINNER_SEEDS` seeds and the other method fixes more on none. The test takes the
    errors as units given each seed's models; ``p_seeds`` (seeds as
    units) is quoted beside the verdict: with 5 seeds it cannot fall below 0.0625, so a winner is a
    statement about these trained models, consistent in direction over their seeds.
    Otherwise the row says which methods it is not separated from."""
    if fig.empty:
        return pd.DataFrame()
    keys = [c for c in fig.columns if c in ("dataset", *budget.SHARED_GROUPS)]
    rows = []
    for vals, g in fig.groupby([*keys, "budget", "role"], sort=False, dropna=False):
        base = dict(zip([*keys, "budget", "role"], vals))
        g = g[np.isfinite(g[figure].astype(float))].sort_values(figure, ascending=False)
        if g.empty:
            continue
        top = g.iloc[0].method
        p = pairs
        for k, v in base.items():
            p = p[p[k] == v] if len(p) and k in p else p
        tied, seeds_p = [], []
        for other in g.method.iloc[1:]:
            hit = (
                p[
                    ((p.method_a == top) & (p.method_b == other))
                    | ((p.method_a == other) & (p.method_b == top))
                ]
                if len(p)
                else p
            )
            if hit.empty:
                tied.append(f"{other} (no shared errors)")
                continue
            h = hit.iloc[0]
            a_top = h.method_a == top
            top_only, other_only = (h.a_only, h.b_only) if a_top else (h.b_only, h.a_only)
            # missing or NaN (another version's table): never a pass
            behind = float(h.get("seeds_b_ahead" if a_top else "seeds_a_ahead", np.nan))
            ahead = float(h.get("seeds_a_ahead" if a_top else "seeds_b_ahead", np.nan))
            p_h = float(h.get("p_holm", np.nan))
            if not (p_h < ALPHA and top_only > other_only and behind == 0):
                why = f"Holm p = {p_h:.2g}" + (
                    f", behind on {behind:.0f} seed(s)" if behind else ""
                )
                tied.append(f"{other} ({why})")
            elif not ahead >= MIN_WINNER_SEEDS:  # seeds level with it are no evidence
                tied.append(f"{other} (Holm p = {p_h:.2g}, but ahead on {ahead:.0f} seed(s) only)")
            else:
                seeds_p.append(h.get("p_seeds", np.nan))
        text = (
            f"{top} fixes the most, and more than every other method (exact McNemar on the shared "
            f"errors, Holm-adjusted p < {ALPHA}, ahead on {MIN_WINNER_SEEDS}+ seeds and behind on "
            f"none; seeds as units: "
            f"largest p = {np.nanmax(seeds_p) if seeds_p else np.nan:.2g})"
            if not tied and len(g) > 1
            else f"no winner: {top} has the highest figure but is not separated from "
            + ", ".join(tied)
            if tied
            else f"{top} is the only method with a figure"
        )
        won = not tied and len(g) > 1  # a method alone beats nobody
        rows.append({**base, "figure": figure, "top": top, "winner": won, "text": text})
    return pd.DataFrame(rows)


def tables(
    summary: pd.DataFrame,
    budgets: Sequence[float] = budget.BUDGETS,
    design_seeds: Sequence[int] = DESIGN_SEEDS,
) -> dict[str, pd.DataFrame]:
    """What a sweep writes and its report shows: ``evidence`` (:func:`figures` per method, budget
    and role), ``evidence_pairs`` (:func:`paired` per :data:`MASKS` figure; Holm over a dataset's
    comparisons, the cross-fit's apart: a dataset's tables stand alone) and ``evidence_winners``."""
    oos = out_of_selection(summary, budgets, design_seeds)
    fig = figures(oos)
    pairs = [p for p in (paired(oos, f) for f in MASKS) if len(p)]
    pairs = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame()
    if len(pairs):  # one family per dataset: every comparison the report shows for it
        fam = pairs["dataset"].astype(str) if "dataset" in pairs else pd.Series("", pairs.index)
        # the cross-fit's comparisons are a family of their own (half its outcomes are already in
        # the errors-not-edited comparisons): the primary verdicts do not depend on a swap's run
        fam = fam + np.where(pairs.figure == "crossfit_generalisation", " cross-fit", "")
        for idx in pairs.groupby(fam, sort=False).groups.values():
            pairs.loc[idx, "p_holm"] = holm(pairs.loc[idx, "p"])
    win = [winners(fig, pairs[pairs.figure == f] if len(pairs) else pairs, f) for f in MASKS]
    win = [w for w in win if len(w)]
    return {
        "evidence": fig,
        "evidence_pairs": pairs,
        "evidence_winners": pd.concat(win, ignore_index=True) if win else pd.DataFrame(),
    }
