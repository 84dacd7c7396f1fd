"""``fresh_seeds: chosen``: a seed outside the design seeds runs only the settings the design seeds
chose, the settings the evidence protocol reports it at; the design seeds run first."""

import pandas as pd
import pytest
from test_evidence import _row

from vitedit import evidence
from vitedit.sweep import fresh
from vitedit.sweep.collect import in_sample_rows
from vitedit.sweep.plan import Experiment, Prep
from vitedit.sweep.spec import SweepError, check_spec, load_spec

from conftest import ROOT

SEEDS = (42, 43, 44, 45, 46)


def summary(seeds=SEEDS) -> pd.DataFrame:
    """Method a: a1 best at 1 %, a3 (3 % regression) best at 5 %; method b: b2 at both budgets;
    method c never within a budget. Seeds 45 and 46 are fresh."""
    rows = []
    for s in seeds:
        rows += [
            _row("a", "a1", s, 0.5, 0.0, index=0),
            _row("a", "a2", s, 0.3, 0.0, index=1),
            _row("a", "a3", s, 0.9, 0.03, index=2),
            _row("b", "b1", s, 0.1, 0.0, index=0),
            _row("b", "b2", s, 0.4, 0.005, index=1),
            _row("c", "c1", s, 1.0, 0.2, index=0),
        ]
    return pd.DataFrame(rows)


def test_the_chosen_settings_are_those_a_fresh_seed_is_reported_at():
    s = summary()
    oos = evidence.out_of_selection(s)
    reported = set(oos[(oos.role == "confirmation") & (oos.config_id != "")].config_id)
    assert reported == {"a1", "a3", "b2"}
    assert fresh.chosen_configs(s) == reported
    # the fresh seeds' own figures choose nothing (with them, a2 would win at 1 %)
    fresh_rows = s.seed > 44
    s.loc[fresh_rows & (s.config_id == "a2"), "edit_fix_ratio"] = 1.0
    s.loc[fresh_rows & (s.config_id == "a1"), "edit_fix_ratio"] = 0.0
    assert fresh.chosen_configs(s) == reported == fresh.chosen_configs(summary((42, 43, 44)))


def experiments() -> list[Experiment]:
    prep = Prep("p", "p", {})
    return [
        Experiment(
            i, f"{cfg}{seed}", cfg, f"{cfg}_s{seed}", "head", {"dataset": "d", "seed": seed}, prep
        )
        for i, (seed, cfg) in enumerate(
            (seed, cfg) for seed in SEEDS for cfg in ("a1", "a2", "a3", "b1", "b2", "c1")
        )
    ]


def test_fresh_seeds_wait_for_the_design_grid_then_run_its_choices(tmp_path):
    exps, spec = experiments(), {"fresh_seeds": "chosen"}
    said = []
    now = fresh.planned(spec, exps, tmp_path, log=said.append)
    assert {e.params["seed"] for e in now} == {42, 43, 44} and len(now) == 18
    assert "wait for the design seeds" in said[0] and "d (6 of 6 settings)" in said[0]
    summary((42, 43, 44)).to_csv(tmp_path / "param_search_summary_d.csv", index=False)
    now = fresh.planned(spec, exps, tmp_path)
    later = [(e.params["seed"], e.config_id) for e in now if e.params["seed"] > 44]
    assert sorted(later) == [(s, c) for s in (45, 46) for c in ("a1", "a3", "b2")]
    assert fresh.planned({"fresh_seeds": "grid"}, exps, tmp_path) == exps
    assert fresh.planned({}, exps, tmp_path) == exps


def test_one_command_runs_the_design_seeds_first_then_the_chosen_fresh_ones(tmp_path, monkeypatch):
    calls = []

    def run_sweep(spec, exps, sweep_dir, executor, *a, **kw):
        calls.append(sorted((e.params["seed"], e.config_id) for e in exps))
        return {"ok": len(exps), "seconds": 1.0}

    def collect(sweep_dir):  # the design seeds' results, as the first phase leaves them
        summary((42, 43, 44)).to_csv(sweep_dir / "param_search_summary_d.csv", index=False)

    monkeypatch.setattr(fresh, "run_sweep", run_sweep)
    monkeypatch.setattr(fresh, "collect", collect)
    counts = fresh.run_phases({"fresh_seeds": "chosen"}, experiments(), tmp_path, None)
    assert [len(c) for c in calls] == [18, 6] and {s for s, _ in calls[0]} == {42, 43, 44}
    assert {c for _, c in calls[1]} == {"a1", "a3", "b2"}
    assert counts == {"ok": 24, "seconds": 2.0}
    # fresh seeds alone, with no design results: refused, saying what to run
    calls.clear()
    fresh_only = [e for e in experiments() if e.params["seed"] > 44]
    with pytest.raises(SweepError, match="--seeds 42 43 44"):
        fresh.run_phases({"fresh_seeds": "chosen"}, fresh_only, tmp_path / "empty", None)
    assert calls == []


def test_the_in_sample_table_reads_the_design_seeds_when_fresh_seeds_ran_their_choices():
    s = summary()
    assert len(in_sample_rows({}, s)) == len(s)
    rows = in_sample_rows({"fresh_seeds": "chosen"}, s)
    assert set(rows.seed) == {42, 43, 44}


def test_the_benchmark_runs_fresh_seeds_at_the_chosen_settings_and_bad_values_are_refused(tmp_path):
    assert (
        check_spec(load_spec(ROOT / "params" / "sweeps" / "benchmark.yaml"))["fresh_seeds"]
        == "chosen"
    )
    with pytest.raises(SweepError, match="fresh_seeds must be one of"):
        check_spec({"name": "x", "methods": ["head"], "fresh_seeds": "some"})


def test_a_setting_missing_on_one_design_seed_keeps_the_fresh_seeds_waiting(tmp_path):
    s = summary((42, 43, 44))
    s = s[~((s.seed == 43) & (s.config_id == "a2"))]  # a2 ran on 42 and 44 only, so far
    s.to_csv(tmp_path / "param_search_summary_d.csv", index=False)
    said = []
    now = fresh.planned({"fresh_seeds": "chosen"}, experiments(), tmp_path, log=said.append)
    assert {e.params["seed"] for e in now} == {42, 43, 44}
    assert "d (1 of 6 settings)" in said[0]


def test_the_trade_off_curves_read_the_seeds_that_ran_the_grid(tmp_path):
    from vitedit.sweep.report import report_context

    (tmp_path / "sweep.yaml").write_text("name: b\nfresh_seeds: chosen\n")
    rows = [
        {
            "dataset": "d",
            "method": "a",
            "config_id": c,
            "seed": s,
            "status": "ok",
            "index": 0,
            "edit_fix_ratio": f,
            "val_regression_rate": 0.0,
            "proj_regression_rate": 0.0,
            "report": str(tmp_path / "r"),
        }
        for c, f in (("a1", 0.5), ("a2", 0.2))
        for s in (42, 43, 44)
    ]
    rows.append({**rows[0], "seed": 45, "edit_fix_ratio": 0.0})  # a fresh seed at the chosen a1
    pd.DataFrame(rows).to_csv(tmp_path / "param_search_summary_d.csv", index=False)
    settings = report_context(tmp_path)["settings"].set_index("config_id")
    assert settings.loc["a1", "edit_fix_ratio"] == 0.5 and settings.loc["a1", "n_seeds"] == 3
