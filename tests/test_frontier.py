"""Issue 30's plane (vitedit.frontier): the goal's bar, the Pareto front, the retrain's point."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from vitedit import frontier


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
            ("four_seeds", 0.01, "confirmation", 0.004, 0.008, 0.002, 0.01),
        ]
    )
    df.loc[df.method == "four_seeds", "n_seeds"] = 4
    got = frontier.points(df).set_index("method").goal
    assert got.to_dict() == {
        "meets": True,
        "too_weak": False,
        "zero_in_ci": False,
        "too_damaging": False,
        "four_seeds": False,  # the goal asks for >= 5 confirmation seeds
    }
    # a reference that is not an edit (the retrain) never meets it
    ref = frontier.reference("d", "retrain", 5, 0.004, 0.008, (0.002, 0.01), "first")
    edit = frontier.reference("d", "rule", 5, 0.004, 0.008, (0.002, 0.01), "first", edit=True)
    assert list(frontier.mark(pd.concat([ref, edit])).goal) == [False, True]


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
    # another table (other base models) is on its own front; a point without estimates on none
    pilot = frontier.points(
        evidence([("p", 0.01, "confirmation", 0.009, -0.01, -0.02, 0.0)]), source="x"
    )
    nan = frontier.reference("d", "n", 5, np.nan, 0.001, (0, 0), "first")
    both = frontier.mark(pd.concat([got, pilot, nan]).drop(columns=["goal", "pareto"]))
    assert list(both.pareto) == [True, False, True, True, True, True, False]


def test_a_table_that_is_not_an_evidence_table_is_refused_and_one_selection_is_the_default():
    with pytest.raises(ValueError, match="not an evidence table.*no method.*test_delta"):
        frontier.points(pd.DataFrame({"dataset": ["d"], "role": ["confirmation"]}))
    df = evidence([("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01)])
    assert list(frontier.points(df.drop(columns="edit_selection")).edit_selection) == ["first"]


def test_the_retrain_point_pools_its_fresh_seeds_once_each():
    seeds = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "seed": [45, 46],
            "errors": ["all", "all"],
            "test_fixed": [53, 57],
            "test_broken": [62, 0],
            "test_n": [3421, 3421],
            "test_correct_before": [3200, 3250],
            "test_regression_pct": [100 * 62 / 3200, 0.0],
        }
    )
    r = frontier.retrain_reference(seeds, "first").iloc[0]
    assert r.test_regression == pytest.approx(62 / 6450)  # pooled, the seed with none counted
    assert r.test_delta == pytest.approx((110 - 62) / 6842)
    assert r.test_delta_low < r.test_delta < r.test_delta_high
    assert r.n_seeds == 2 and r.edit_selection == "first" and "all" in r.method and not r.edit
    for bad, why in [
        (seeds.assign(errors=["all", "control"]), "several kinds"),
        (seeds.assign(seed=[44, 46]), r"design seeds \[44\]"),
        (seeds.assign(seed=[45, 45]), r"duplicated \[45\]"),
        (seeds.drop(columns="test_correct_before"), "broke nothing"),
    ]:
        with pytest.raises(ValueError, match=why):
            frontier.retrain_reference(bad, "first")
    old = seeds.drop(columns="test_correct_before").assign(test_broken=[62, 13])
    old["test_regression_pct"] = [100 * 62 / 3200, 100 * 13 / 3250]  # older rows: from the rate
    assert frontier.retrain_reference(old, "first").iloc[0].test_regression == pytest.approx(
        75 / 6450
    )
    mixed = old.assign(test_correct_before=[np.nan, 3250.0])  # rows of two versions pooled
    got = frontier.retrain_reference(mixed, "first").iloc[0].test_regression
    assert got == pytest.approx(75 / 6450)


def test_issue_30s_rule_points_are_edits_and_a_method_without_a_setting_has_none():
    choices = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "edit_selection": ["first", "first"],
            "method": ["m", "n"],
            "budget": [0.005, 0.005],
            "config_id": ["c1", None],
            "seeds": [5, np.nan],
            "test_delta_points": [0.6, np.nan],
            "test_delta_ci95": ["(0.1, 1.1)", np.nan],
            "test_regression_pct": [0.4, np.nan],
        }
    )
    got = frontier.choice_points(choices)
    assert len(got) == 1 and got.iloc[0].edit and got.iloc[0].goal
    assert (got.iloc[0].test_delta_low, got.iloc[0].test_delta_high) == pytest.approx(
        (0.001, 0.011)
    )


def test_the_plane_is_labelled():
    df = frontier.points(
        evidence(
            [
                ("a", 0.01, "confirmation", 0.001, 0.001, -0.01, 0.01),
                ("b", 0.05, "confirmation", 0.02, -0.01, -0.02, 0.0),
            ]
        )
    )
    df.loc[0, "pair_generalisation"] = 0.2  # b has none: left out of the second panel
    fig = frontier.plot(df)
    ax, gx = fig.axes
    assert "Test regression" in ax.get_xlabel() and "net Test change" in ax.get_ylabel()
    assert "Test regression" in gx.get_xlabel() and "edited pairs" in gx.get_ylabel()
    assert [tuple(line.get_xydata()[0]) for line in gx.get_lines()] == [(0.1, 20.0)]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
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
    labels = [t.get_text() for t in frontier.plot(got).legends[0].get_texts()]
    assert labels[1] == "a <= 1 % and 5 %"


def test_the_bench_writes_the_plane_from_its_tables_and_names_a_missing_file(tmp_path, capsys):
    """benchmarks/bench_frontier.py: evidence tables of two folders (two fronts), issue 30's rule's
    points (a method without a setting left out) and the retrain's seeds, one dataset and
    selection, to a CSV and a figure; a missing file is named before anything is written."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "bench_frontier", ROOT / "benchmarks" / "bench_frontier.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "pilot").mkdir()
    # the published point would beat the pilot's every point if the tables were one front
    published = evidence([("a", 0.01, "confirmation", 0.001, 0.002, -0.01, 0.01)])
    published.to_csv(tmp_path / "benchmark" / "evidence.csv", index=False)
    pilot = evidence([("a", 0.01, "confirmation", 0.003, 0.000, -0.01, 0.01)])
    other = pilot.assign(dataset="e")  # another dataset: left out
    pd.concat([pilot, other]).to_csv(tmp_path / "pilot" / "evidence.csv", index=False)
    pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "edit_selection": ["first", "first"],
            "method": ["m", "n"],
            "budget": [0.005, 0.005],
            "config_id": ["c1", None],
            "seeds": [5, np.nan],
            "test_delta_points": [0.1, np.nan],
            "test_delta_ci95": ["(-0.1, 0.3)", np.nan],
            "test_regression_pct": [0.2, np.nan],
        }
    ).to_csv(tmp_path / "pilot" / "issue30_choice.csv", index=False)
    pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "seed": [45, 46],
            "errors": ["all", "all"],
            "test_fixed": [53, 57],
            "test_broken": [62, 42],
            "test_n": [3421, 3421],
            "test_correct_before": [3200, 3250],
            "test_regression_pct": [100 * 62 / 3200, 100 * 42 / 3250],
        }
    ).to_csv(tmp_path / "pilot" / "retrain.csv", index=False)
    args = [
        "dataset=d",
        "selection=first",
        f"evidence={tmp_path / 'benchmark' / 'evidence.csv'},{tmp_path / 'pilot' / 'evidence.csv'}",
        f"choice={tmp_path / 'pilot' / 'issue30_choice.csv'}",
        f"retrain={tmp_path / 'pilot' / 'retrain.csv'}",
        f"out={tmp_path}",
    ]
    df = bench.main(args)
    assert sorted(df.source.unique()) == ["pilot", "published"] and set(df.dataset) == {"d"}
    assert len(df) == 4 and not df.method.str.startswith("n ").any()  # n has no setting
    front = dict(zip(df.source + ":" + df.method.str[:1], df.pareto))
    assert front == {"published:a": True, "pilot:m": True, "pilot:a": False, "pilot:r": False}
    assert not df[df.method.str.startswith("retrain")].edit.any()
    assert (tmp_path / "frontier_d_first.csv").is_file()
    assert (tmp_path / "frontier_d_first.png").is_file()
    with pytest.raises(SystemExit, match="no such file: .*gone.csv"):
        bench.main(["evidence=" + str(tmp_path / "gone.csv"), f"out={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="no confirmation rows for z / first"):
        bench.main(["dataset=z", f"evidence={tmp_path / 'benchmark' / 'evidence.csv'}"])
