"""Paired statistics of two models on the same samples, and statistics across seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .budget import t_half_width


def mcnemar_exact(correct_before: np.ndarray, correct_after: np.ndarray) -> dict:
    """Exact (binomial) McNemar test of a paired change in correctness.

    b = correct→wrong, c = wrong→correct; under H0 each discordant pair is either way with
    probability ½; two-sided p = min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½). No discordant
    pair: p = 1.
    """
    # lazy: scipy.stats / scikit-learn add ~1.5 s to each process importing this module (the
    # kernels of 02-05, the CLI's preflight through locate), which never call this function
    from scipy.stats import binom

    cb, ca = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    b, c = int((cb & ~ca).sum()), int((~cb & ca).sum())
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))
    return {"correct_to_wrong": b, "wrong_to_correct": c, "p_value": p}


def bootstrap_delta_ci(
    correct_before: np.ndarray,
    correct_after: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the paired accuracy change (samples resampled with replacement)."""
    d = np.asarray(correct_after, float) - np.asarray(correct_before, float)
    if len(d) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    # lazy: scikit-learn adds ~1.5 s to each process importing this module (see mcnemar_exact)
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC as MedMNIST reports it: binary on p(class 1), else one-vs-rest macro; NaN if undefined."""
    # lazy: scipy.stats / scikit-learn add ~1.5 s to each process importing this module (the
    # kernels of 02-05, the CLI's preflight through locate), which never call this function
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    if (
        len(present) < probs.shape[1]
    ):  # OvR needs every class present: average over the present ones
        return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def per_class_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    y, pred = np.asarray(y), np.asarray(pred)
    return np.array(
        [(pred[y == c] == c).mean() if (y == c).any() else np.nan for c in range(n_classes)]
    )


def aggregate_seeds(tables: dict[int, pd.DataFrame], level: float = 0.95) -> pd.DataFrame:
    """Mean, std, t-based CI and count of every numeric metric per method across seeds.

    ``tables`` maps a seed to its run's metrics table (:func:`load_metrics`). A metric that is
    missing or NaN in a seed is left out of that metric's statistics (its ``n`` says so), never
    counted as 0.
    """
    frames = [t.assign(seed=s) for s, t in tables.items() if len(t)]
    if not frames:
        return pd.DataFrame(columns=["method", "metric", "mean", "std", "ci_low", "ci_high", "n"])
    df = pd.concat(frames, ignore_index=True)
    rows = []
    numeric = [
        c
        for c in df.columns
        if c not in ("method", "seed") and pd.api.types.is_numeric_dtype(df[c])
    ]
    for method, g in df.groupby("method", sort=False):
        for col in numeric:
            v = g[col].dropna().to_numpy(float)
            n = len(v)
            mean = float(v.mean()) if n else np.nan
            std = float(v.std(ddof=1)) if n > 1 else np.nan
            half = t_half_width(v, level)
            rows.append(
                {
                    "method": method,
                    "metric": col,
                    "mean": mean,
                    "std": std,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": n,
                }
            )
    return pd.DataFrame(rows)


def seeds_table(
    agg: pd.DataFrame,
    metrics=("edit_fix_ratio", "proj_regression_rate", "test_acc_delta", "edit_time_seconds"),
) -> pd.DataFrame:
    """Wide 'mean ± half-CI' table: one row per method, one column per metric."""
    out = {}
    for _, r in agg[agg.metric.isin(metrics)].iterrows():
        half = (r["ci_high"] - r["mean"]) if np.isfinite(r["ci_high"]) else np.nan
        out.setdefault(r.method, {})[r.metric] = (
            f"{r['mean']:.3f} ± {half:.3f}" if np.isfinite(half) else f"{r['mean']:.3f}"
        )
    return pd.DataFrame.from_dict(out, orient="index")[
        [m for m in metrics if m in agg.metric.values]
    ]


def _within(k: np.ndarray, n: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray]:
    """The counts whose posterior stands for a seed's sampling noise: its own, or, when every seed
    was measured on the same samples (FT-Val, Test: the official splits), each seed's counts
    divided by the number of seeds, so that the pooled figure has one sample's noise, not S
    independent samples' (fully correlated: an upper bound on that part of the uncertainty)."""
    s = len(n) if shared else 1
    return k / s, n / s


def cluster_rate(
    k: Sequence[float],
    n: Sequence[float],
    n_boot: int = 4000,
    seed: int = 0,
    level: float = 0.95,
    shared: bool = False,
    pooled: bool = True,
) -> tuple[float, float, float]:
    """Pooled rate sum(k) / sum(n) over seeds (``pooled=False``: the mean of the seeds' rates, the
    estimate budget selection uses) and its percentile interval from a two-stage
    bootstrap: the seeds drawn with replacement, then each seed's rate from its Jeffreys posterior
    (its samples' uncertainty; ``shared``: the seeds were measured on the same samples, see
    :func:`_within`). Always inside [0, 1]; with one seed only the samples vary.
    With 3 seeds whose rates differ it runs narrow (simulated: a 0.8-point spread of the net Test
    change over seeds, 78 % coverage at a nominal 90 %; 87 % with 5 seeds): with few seeds read it
    as a lower bound on the uncertainty. NaN when nothing was counted."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    if not len(n) or n.sum() <= 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(n), (n_boot, len(n)))
    kw, nw = _within(k, n, shared)
    # within a drawn seed, its rate from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2)
    kb = n[pick] * rng.beta(kw[pick] + 0.5, nw[pick] - kw[pick] + 0.5)
    rates = kb.sum(1) / n[pick].sum(1) if pooled else (kb / n[pick]).mean(1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    lo, hi = (0.0 if k.sum() == 0 else lo), (1.0 if k.sum() == n.sum() else hi)  # Jeffreys' rule
    est = k.sum() / n.sum() if pooled else (k / n).mean()
    return float(est), float(min(lo, est)), float(max(hi, est))


def cluster_delta(
    gained: Sequence[float],
    lost: Sequence[float],
    total: Sequence[float],
    n_boot: int = 4000,
    seed: int = 0,
    levels: Sequence[float] = (0.95, 0.90),
    shared: bool = False,
) -> dict:
    """Net change (gained - lost) / total pooled over seeds, with two-stage bootstrap intervals at
    each level (seeds, then each seed's shares of gained / lost / unchanged from their Jeffreys
    Dirichlet posterior; ``shared`` as in :func:`cluster_rate`)."""
    g, lo_, t = (np.asarray(a, float) for a in (gained, lost, total))
    out: dict = {"delta": np.nan}
    if not len(t) or t.sum() <= 0:
        return out | {f"ci{int(round(x * 100))}": (np.nan, np.nan) for x in levels}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(t), (n_boot, len(t)))
    s = len(t) if shared else 1
    # each drawn seed's (gained, lost, unchanged) shares from its Jeffreys posterior (Dirichlet)
    share = rng.gamma(np.stack([g, lo_, t - g - lo_], -1)[pick] / s + 0.5)
    share /= share.sum(-1, keepdims=True)
    tb = t[pick]
    deltas = (tb * (share[..., 0] - share[..., 1])).sum(1) / tb.sum(1)
    out["delta"] = float((g.sum() - lo_.sum()) / t.sum())
    for x in levels:
        q = np.quantile(deltas, [(1 - x) / 2, (1 + x) / 2])
        out[f"ci{int(round(x * 100))}"] = (float(q[0]), float(q[1]))
    return out


def sign_flip(d: Sequence[float]) -> float:
    """Exact two-sided sign-flip (permutation) test that per-seed differences ``d`` are symmetric
    about 0, with the seed as the unit: every one of the 2^S sign assignments, p = share with
    |sum| at least the observed. Its smallest possible p is 2 / 2^S (3 seeds 0.25, 5 seeds 0.0625,
    8 seeds 0.0078): few seeds cannot reject, whatever they show. 1.0 when every d is 0."""
    d = np.asarray(d, float)
    d = d[d != 0]
    if not len(d):
        return 1.0
    signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    sums = np.abs(signs @ d)
    return float((sums >= abs(d.sum()) - 1e-9).mean())


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over all of ``p``; NaN kept)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    idx = np.where(np.isfinite(p))[0]
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out
