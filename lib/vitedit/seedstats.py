"""Statistics over seeds and their samples, for figures pooled over independently trained models:
two-stage cluster-bootstrap intervals of a rate and of a net change (inside [0, 1]), the exact
sign-flip test with the seed as the unit, and Holm's adjustment. Imports nothing of the project
(the in-sample table, :mod:`vitedit.budget`, and the evidence tables, :mod:`vitedit.evidence`,
both read it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    estimate budget selection uses) and its percentile interval from a two-stage bootstrap: the
    seeds drawn with replacement, then each seed's rate from its Jeffreys posterior (its samples'
    uncertainty). ``shared``: every seed was measured on the same samples (FT-Val, Test: the
    official splits), so their sampling noise is one draw per replicate, not one per seed: the
    drawn seeds' observed rates, plus one Jeffreys draw on a seed's mean counts minus its mean
    (fully correlated: an upper bound on that part of the uncertainty). Always inside [0, 1]; with
    one seed only the samples vary. With 3 seeds whose rates differ it runs narrow (simulated: a
    0.8-point spread of the net Test change over seeds, 78 % coverage at a nominal 90 %; 87 % with
    5 seeds): with few seeds read it as a lower bound on the uncertainty. NaN when nothing was
    counted."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    if not len(n) or n.sum() <= 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(n), (n_boot, len(n)))
    if shared:
        kb = k[pick]
        km, nm = k.mean(), n.mean()
        noise = rng.beta(km + 0.5, nm - km + 0.5, n_boot) - km / nm
    else:
        # within a drawn seed, its rate from its Jeffreys posterior Beta(k + 1/2, n - k + 1/2)
        kb, noise = n[pick] * rng.beta(k[pick] + 0.5, n[pick] - k[pick] + 0.5), 0.0
    rates = kb.sum(1) / n[pick].sum(1) if pooled else (kb / n[pick]).mean(1)
    rates = np.clip(rates + noise, 0.0, 1.0)
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    lo, hi = (0.0 if k.sum() == 0 else lo), (1.0 if k.sum() == n.sum() else hi)  # Jeffreys' rule
    est = k.sum() / n.sum() if pooled else (k / n).mean()
    return float(est), float(lo), float(hi)


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
    Dirichlet posterior; ``shared`` as in :func:`cluster_rate`: one Dirichlet draw per replicate on
    a seed's mean counts)."""
    g, lo_, t = (np.asarray(a, float) for a in (gained, lost, total))
    out: dict = {"delta": np.nan}
    if not len(t) or t.sum() <= 0:
        return out | {f"ci{int(round(x * 100))}": (np.nan, np.nan) for x in levels}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(t), (n_boot, len(t)))
    tb = t[pick]
    counts = np.stack([g, lo_, t - g - lo_], -1)
    if shared:
        deltas = (g[pick] - lo_[pick]).sum(1) / tb.sum(1)
        mean = counts.mean(0)
        share = rng.gamma(np.broadcast_to(mean + 0.5, (n_boot, 3)))
        share /= share.sum(-1, keepdims=True)
        deltas = deltas + (share[:, 0] - share[:, 1]) - (mean[0] - mean[1]) / mean.sum()
    else:
        # each drawn seed's (gained, lost, unchanged) shares from its Jeffreys posterior (Dirichlet)
        share = rng.gamma(counts[pick] + 0.5)
        share /= share.sum(-1, keepdims=True)
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
    if not np.isfinite(d).all():
        return float("nan")  # a seed without its counts: no test
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
