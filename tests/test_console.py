"""The console a run ends with (issue 28): one compact table and one warning line per method."""

import json

from vitedit import alerts, report


def _run(tmp_path, methods):
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": methods}))
    return tmp_path


def test_a_run_ends_with_a_table_and_one_warning_line_per_method(tmp_path):
    base = {"edit_total_wrong": 30, "val_regression_rate": 0.0, "test_acc_delta": 0.0}
    run = _run(
        tmp_path,
        {
            "alphaedit": {
                "method": "alphaedit",
                **base,
                "edit_num_fixed": 0,
                "edit_fix_ratio": 0.0,
            },
            "head_closed_form": {
                "method": "head_closed_form",
                **base,
                "edit_num_fixed": 12,
                "edit_fix_ratio": 0.4,
                "proj_regression_rate": 0.2,
                "test_acc_after": 0.1,
                "test_majority_share": 0.4,
                "test_acc_before": 0.6,
                "test_acc_delta": -0.5,
                "test_delta_ci_high": -0.4,
            },
        },
    )
    lines = report.console_summary(run)
    assert lines[0].split() == ["method", "fixed", "FT-Val", "regr.", "Test", "Δ", "warnings"]
    assert lines[1].split() == ["alphaedit", "0/30", "0.0%", "+0.000", "1"]
    assert lines[2].split()[:2] == ["head_closed_form", "12/30"] and lines[2].split()[-1] == "3"
    warned = [w for w in lines if w.startswith("WARNING")]
    assert len(warned) == 2  # one per method, however many warnings each has
    assert "destroyed" in warned[1] and "(+2 more in the report)" in warned[1]
    # a method that does not act says which knob moves it, and that the sweep searches it
    assert "L2" in warned[0] and "strength grid searches" in warned[0]


def test_the_most_serious_warning_is_chosen_by_kind():
    ws = ["m: fixes almost none ...; does not act", "m: Test accuracy falls by 3%", "m: x coarse"]
    assert alerts.grouped({"m": ws}) == ["m: Test accuracy falls by 3% (+2 more in the report)"]


def test_nothing_evaluated_prints_nothing(tmp_path):
    assert report.console_summary(tmp_path) == []
