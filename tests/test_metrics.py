import numpy as np
import pytest

from vitedit import evaluation as ev
from vitedit import paired


def test_transitions_on_a_hand_computed_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    before = np.array([0, 1, 1, 0, 2, 2])  # correct: 1, 0, 1, 0, 1, 1
    after = np.array([0, 0, 0, 1, 2, 1])  # correct: 1, 1, 0, 1, 1, 0
    t = ev.transitions(y, before, after)
    assert (t["correct_to_wrong"], t["wrong_to_correct"]) == (2, 2)
    assert t["stability"] == pytest.approx(2 / 4) and t["regression_rate"] == pytest.approx(2 / 4)
    assert t["fix_rate"] == pytest.approx(1.0) and t["acc_before"] == t[
        "acc_after"
    ] == pytest.approx(4 / 6)


def test_transitions_of_an_all_correct_model():
    y = np.array([1, 2, 3])
    t = ev.transitions(y, y, y)
    assert t["stability"] == 1.0 and t["regression_rate"] == 0.0 and np.isnan(t["fix_rate"])


def test_mcnemar_exact():
    cb = np.array([1, 1, 1, 1, 0, 0, 0, 1], bool)
    ca = np.array([1, 0, 0, 0, 0, 1, 0, 1], bool)  # b = 3 (correct->wrong), c = 1
    r = paired.mcnemar_exact(cb, ca)
    # two-sided exact: 2 * P[Bin(4, 1/2) <= 1] = 2 * 5/16
    assert (r["correct_to_wrong"], r["wrong_to_correct"]) == (3, 1) and r[
        "p_value"
    ] == pytest.approx(10 / 16)
    assert paired.mcnemar_exact(cb, cb)["p_value"] == 1.0  # no discordant pair
    many = paired.mcnemar_exact(np.ones(20, bool), np.r_[np.zeros(10, bool), np.ones(10, bool)])
    assert many["p_value"] == pytest.approx(2 * 0.5**10)


def test_bootstrap_ci_brackets_the_observed_change():
    rng = np.random.default_rng(0)
    cb = rng.random(400) < 0.5
    ca = cb.copy()
    ca[:40] = True  # +~5 points
    lo, hi = paired.bootstrap_delta_ci(cb, ca, seed=1)
    delta = ca.mean() - cb.mean()
    assert lo < delta < hi and lo > 0
    assert paired.bootstrap_delta_ci(cb, cb) == (0.0, 0.0)
    assert paired.bootstrap_delta_ci(cb, ca, seed=1) == (lo, hi)  # seeded


def test_the_bootstrap_of_counts_is_the_bootstrap_of_samples():
    """Drawing how many +1/-1/0 changes a resample holds (multinomial) gives the interval that
    resampling the samples themselves gives, up to Monte-Carlo noise."""
    rng = np.random.default_rng(3)
    cb = rng.random(3000) < 0.9
    ca = cb.copy()
    ca[rng.choice(3000, 40, replace=False)] ^= True  # some changes either way
    d = ca.astype(np.int8) - cb.astype(np.int8)
    means = d[rng.integers(0, len(d), (20000, len(d)))].mean(1)
    ref = np.quantile(means, [0.025, 0.975])
    got = paired.bootstrap_delta_ci(cb, ca, n_boot=20000, seed=5)
    assert np.allclose(got, ref, atol=2 / 3000), (got, ref)  # within 2 samples' worth
    wide = paired.bootstrap_delta_ci(cb, ca, n_boot=20000, seed=5, level=0.99)
    assert wide[0] < got[0] and wide[1] > got[1]


def test_f1_auc_and_per_class_accuracy():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    assert paired.macro_f1(y, pred, 2) == pytest.approx((2 / 3 + 0.8) / 2)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    assert paired.auc(y, probs) == 1.0
    assert np.isnan(paired.auc(np.zeros(4, int), probs))
    assert paired.per_class_accuracy(y, pred, 3)[:2].tolist() == [0.5, 1.0] and np.isnan(
        paired.per_class_accuracy(y, pred, 3)[2]
    )
    probs3 = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    assert paired.auc(np.array([0, 1, 0]), probs3) == pytest.approx(
        1.0
    )  # class 2 absent: OvR over present classes


def test_seed_aggregation_ignores_missing_values_and_gives_t_intervals():
    import pandas as pd

    tables = {
        s: pd.DataFrame([{"method": "a", "x": v, "y": w}])
        for s, v, w in [(1, 0.1, 1.0), (2, 0.2, np.nan), (3, 0.3, 3.0)]
    }
    agg = paired.aggregate_seeds(tables)
    x = agg[agg.metric == "x"].iloc[0]
    assert x["mean"] == pytest.approx(0.2) and x["n"] == 3
    assert x["ci_high"] - x["mean"] == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    y = agg[agg.metric == "y"].iloc[0]
    assert y["n"] == 2 and y["mean"] == pytest.approx(2.0)  # NaN left out, not counted as 0
    table = paired.seeds_table(agg, metrics=("x",))
    assert table.loc["a", "x"].startswith("0.200 ± ")
