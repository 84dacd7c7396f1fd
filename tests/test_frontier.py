"""Issue 30's plane (vitedit.frontier): the goal's bar, the Pareto front, the retrain's point."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from vitedit import frontier, seedstats


def evidence(rows):
    """An evidence table (vitedit.evidence.tables' columns) from (method, budget, role,
    regression, delta, low, high) tuples."""
    base = dict.fromkeys(frontier.COLUMNS, np.nan) | {"dataset": "d", "edit_selection": "first"}
    out = []
    for method, budget, role, reg, delta, low, high in rows:
        out.append(
            base
            | {
                "method": method,
                "budget": budget,
                "role": role,
                "n_seeds": 5,
                "test_regression": reg,
                "test_delta": delta,
                "test_delta_low": low,
                "test_delta_high": high,
            }
        )
    return pd.DataFrame(out)


def test_the_goal_needs_the_gain_its_interval_above_zero_and_little_damage():
    df = evidence(
        [
            ("meets", 0.01, "confirmation", 0.005, 0.005, 0.0001, 0.01),  # on both bounds
            ("too_weak", 0.01, "confirmation", 0.004, 0.0049, 0.001, 0.01),
            ("zero_in_ci", 0.01, "confirmation", 0.004, 0.008, 0.0, 0.01),
            ("too_damaging", 0.01, "confirmation", 0.0051, 0.008, 0.002, 0.01),
        ]
    )
    got = frontier.points(df).set_index("method").goal
    assert got.to_dict() == {
        "meets": True,
        "too_weak": False,
        "zero_in_ci": False,
        "too_damaging": False,
    }


def test_the_pareto_front_is_what_no_other_point_beats_on_both_axes():
    df = evidence(
        [
            ("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01),
            ("b", 0.01, "confirmation", 0.002, 0.000, -0.01, 0.01),  # beaten by a
            ("c", 0.05, "confirmation", 0.002, 0.002, -0.01, 0.01),
            ("c_tie", 0.05, "confirmation", 0.002, 0.002, -0.01, 0.01),  # equal: neither beaten
            ("design", 0.01, "design", 0.0, 0.01, 0.005, 0.02),  # another role: left out
        ]
    )
    other = evidence([("b", 0.01, "confirmation", 0.002, 0.000, -0.01, 0.01)]).assign(dataset="e")
    got = frontier.points(pd.concat([df, other], ignore_index=True))
    assert list(got.method) == ["a", "b", "c", "c_tie", "b"]
    assert list(got.pareto) == [True, False, True, True, True]  # alone in its dataset: on it


def test_a_table_that_is_not_an_evidence_table_is_refused_and_one_selection_is_the_default():
    with pytest.raises(ValueError, match="not an evidence table.*no method.*test_delta"):
        frontier.points(pd.DataFrame({"dataset": ["d"], "role": ["confirmation"]}))
    df = evidence([("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01)])
    assert list(frontier.points(df.drop(columns="edit_selection")).edit_selection) == ["first"]


def test_the_retrain_point_pools_its_seeds():
    seeds = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "seed": [45, 46],
            "errors": ["all", "all"],
            "test_fixed": [53, 57],
            "test_broken": [62, 42],
            "test_n": [3421, 3421],
            "test_regression_pct": [100 * 62 / 3200, 100 * 42 / 3250],
        }
    )
    r = frontier.retrain_reference(seeds, "first").iloc[0]
    assert r.test_regression == pytest.approx(104 / 6450)
    want = seedstats.cluster_delta(seeds.test_fixed, seeds.test_broken, seeds.test_n, shared=True)
    assert r.test_delta == pytest.approx((110 - 104) / 6842) == pytest.approx(want["delta"])
    assert (r.test_delta_low, r.test_delta_high) == pytest.approx(want["ci95"])
    assert r.n_seeds == 2 and r.edit_selection == "first" and "all" in r.method
    with pytest.raises(ValueError, match="several kinds"):
        frontier.retrain_reference(seeds.assign(errors=["all", "control"]), "first")


def test_the_plane_is_labelled():
    df = frontier.points(
        evidence(
            [
                ("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01),
                ("b", 0.05, "confirmation", 0.02, -0.01, -0.02, 0.0),
            ]
        )
    )
    fig = frontier.plot(df)
    ax = fig.axes[0]
    assert "Test regression" in ax.get_xlabel() and "net Test change" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1:] == ["a <= 1 %", "b <= 5 %"] and "goal" in labels[0]


def test_a_setting_chosen_at_both_budgets_is_one_point():
    df = evidence(
        [
            ("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01),
            ("a", 0.05, "confirmation", 0.001, 0.001, -0.01, 0.01),
            ("b", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01),
            ("b", 0.05, "confirmation", 0.003, 0.002, -0.01, 0.01),
        ]
    ).assign(settings=["s1", "s1", "s2", "s3"])
    got = frontier.points(df)
    assert list(zip(got.method, got.budgets)) == [
        ("a", "<= 1 % and 5 %"),
        ("b", "<= 1 %"),
        ("b", "<= 5 %"),
    ]
    labels = [t.get_text() for t in frontier.plot(got).axes[0].get_legend().get_texts()]
    assert labels[1] == "a <= 1 % and 5 %"
