"""Sweeps without running notebooks: spec checks, expansion and dedup, selection, executors, W&B names."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from vitedit import executors, plots, runs, sweep

from conftest import ROOT

TINY = str(ROOT / "params" / "tiny.yaml")


def spec(tmp_path, **kw):
    s = {
        "name": "t",
        "params": [TINY],
        "methods": ["alphaedit", "memit", "head"],
        "baselines": ["retrain", "finetune"],
        "grid": {"L2": [1e-4, 1e-2], "nullspace_threshold": [1e-2, 1e-4]},
        **kw,
    }
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(s))
    return sweep.check_spec(sweep.load_spec(f))


def test_expansion_dedups_by_what_each_method_depends_on(tmp_path):
    exps = sweep.expand(spec(tmp_path))
    by = pd.Series([e.method for e in exps]).value_counts().to_dict()
    # alphaedit: 2 L2 x 2 thresholds; memit (lambda C0, no ridge) ignores both, as do head and baselines
    assert by == {
        "alphaedit": 4,
        "memit": 1,
        "head": 1,
        "baseline_retrain": 1,
        "baseline_finetune": 1,
    }
    assert len({e.name for e in exps}) == len(exps) == len({e.id for e in exps})
    assert (
        len({e.prep.id for e in exps}) == 1 and exps[0].prep.needs_locate
    )  # training and tracing once
    assert [e.index for e in exps] == list(range(len(exps)))
    a = [e for e in exps if e.method == "alphaedit"]
    assert {(e.params["L2"], e.params["nullspace_threshold"]) for e in a} == {
        (1e-4, 1e-2),
        (1e-4, 1e-4),
        (1e-2, 1e-2),
        (1e-2, 1e-4),
    }
    assert all(
        e.params["methods"] == [e.method] for e in exps
    )  # each experiment runs its method only
    names = {e.name for e in a}
    assert "alphaedit_proj64_edit4_top3_thresh0.01_L20.0001_s42_" in {n[:-8] for n in names}


def test_a_changed_parameter_invalidates_exactly_what_depends_on_it(tmp_path):
    base = {e.method: e for e in sweep.expand(spec(tmp_path, grid={}))}
    edit = {e.method: e for e in sweep.expand(spec(tmp_path, grid={}, set={"L2": 0.5}))}
    train = {e.method: e for e in sweep.expand(spec(tmp_path, grid={}, set={"lr": 0.002}))}
    trace = {e.method: e for e in sweep.expand(spec(tmp_path, grid={}, set={"num_ablations": 8}))}
    layers = {
        e.method: e for e in sweep.expand(spec(tmp_path, grid={}, set={"num_edit_layers": 1}))
    }
    assert edit["alphaedit"].id != base["alphaedit"].id and edit["head"].id == base["head"].id
    assert (
        edit["alphaedit"].prep.id == base["alphaedit"].prep.id
    )  # no retraining for an edit parameter
    assert (
        all(train[m].id != base[m].id for m in base)
        and train["head"].prep.id != base["head"].prep.id
    )
    assert (
        trace["alphaedit"].prep.id != base["alphaedit"].prep.id
        and trace["head"].id == base["head"].id
    )
    # the layer choice is made from the shared tracing: no new tracing, a new AlphaEdit experiment
    assert (
        layers["alphaedit"].prep.id == base["alphaedit"].prep.id
        and layers["alphaedit"].id != base["alphaedit"].id
    )
    assert layers["baseline_finetune"].id == base["baseline_finetune"].id


def test_seeds_make_separate_experiments_of_one_configuration(tmp_path):
    exps = sweep.expand(
        spec(tmp_path, grid={}, seeds=[1, 2], methods=["alphaedit"], baselines=False)
    )
    assert [e.params["seed"] for e in exps] == [1, 2]
    assert exps[0].config_id == exps[1].config_id and exps[0].id != exps[1].id
    assert exps[0].prep.id != exps[1].prep.id  # a checkpoint per seed, never reused across seeds


@pytest.mark.parametrize(
    "bad, msg",
    [
        (
            {"grid": {"nullspace_treshold": [1]}},
            "unknown parameter 'nullspace_treshold'.*Did you mean 'nullspace_threshold'",
        ),
        ({"grid": {"L2": 1e-4}}, "non-empty list"),
        ({"grid": {"L2": ["big"]}}, "parameter 'L2' expects float"),
        ({"grid": {"seed": [1, 2]}}, "'seeds' list"),
        ({"methods": ["rome"]}, "unknown method"),
        ({"selection": {"metric": "test_acc_delta"}}, "not allowed.*never used to choose"),
        (
            {"selection": {"metric": "val_acc_delta", "tie_breakers": [["test_stability", "max"]]}},
            "not allowed",
        ),
        ({"color": "red"}, "unknown sweep spec key"),
    ],
)
def test_bad_specs_are_refused_with_the_fix(tmp_path, bad, msg):
    with pytest.raises((sweep.SweepError, ValueError), match=msg):
        spec(tmp_path, **bad)


def test_continue_from_and_max_experiments_slice_the_list(tmp_path):
    exps = sweep.expand(spec(tmp_path))
    part = sweep.select_slice(exps, 2, 3)
    assert [e.index for e in part] == [2, 3, 4]
    assert sweep.select_slice(exps, 0, None) == exps
    with pytest.raises(sweep.SweepError):
        sweep.select_slice(exps, -1)


def test_dry_run_lists_experiments_and_writes_nothing(tmp_path, retina_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "dry",
                "params": [TINY],
                "methods": ["alphaedit", "head_closed_form"],
                "baselines": ["finetune"],
                "grid": {"num_edit_layers": [1, 2], "L2": [1e-4, 1e-2]},
            }
        )
    )
    out_dir = tmp_path / "sw"
    rc = sweep.main(
        [
            "run",
            str(f),
            "--dry-run",
            "--sweep-dir",
            str(out_dir),
            "--data-path",
            str(retina_path),
            "--max-experiments",
            "5",
            "--continue-from",
            "1",
        ]
    )
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert rc == 0 and not out_dir.exists()
    assert [int(ln.split()[0]) for ln in lines] == [1, 2, 3, 4, 5]
    assert "head_closed_form" in lines[0] and "baseline_finetune" in lines[1] and "todo" in lines[0]
    assert "top2" in lines[2] and "shared: 01_split + 02_train + 03_locate" in out


def test_dry_run_refuses_a_missing_dataset_before_anything_is_written(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        yaml.safe_dump({"name": "dry", "params": [TINY], "grid": {"dataset": ["retinamnist"]}})
    )
    rc = sweep.main(
        [
            "run",
            str(f),
            "--sweep-dir",
            str(tmp_path / "sw"),
            "--data-path",
            str(tmp_path / "none.npz"),
        ]
    )
    assert rc == 2 and not (tmp_path / "sw").exists()


def _summary(rows):
    base = {
        "dataset": "d",
        "status": "ok",
        "edit_fix_ratio": 1.0,
        "proj_regression_rate": 0.1,
        "index": 0,
    }
    return pd.DataFrame([{**base, **r} for r in rows])


def test_selection_never_looks_at_test():
    rows = [  # config A wins on Test, B on FT-Val; C fails; D is B at another seed
        {
            "method": "alphaedit",
            "config_id": "A",
            "experiment": "a",
            "val_acc_delta": 0.00,
            "test_acc_delta": 0.30,
        },
        {
            "method": "alphaedit",
            "config_id": "B",
            "experiment": "b",
            "val_acc_delta": 0.05,
            "test_acc_delta": -0.2,
        },
        {
            "method": "alphaedit",
            "config_id": "B",
            "experiment": "d",
            "val_acc_delta": 0.03,
            "test_acc_delta": -0.1,
        },
        {
            "method": "alphaedit",
            "config_id": "C",
            "experiment": "c",
            "val_acc_delta": 0.90,
            "status": "failed",
        },
        {
            "method": "head",
            "config_id": "H",
            "experiment": "h",
            "val_acc_delta": 0.0,
            "test_acc_delta": 0.0,
        },
    ]
    df = _summary(rows)
    chosen = sweep.select(df).set_index("method")
    assert chosen.loc["alphaedit", "config_id"] == "B" and chosen.loc["alphaedit", "n_seeds"] == 2
    assert chosen.loc["alphaedit", "selection_value"] == pytest.approx(0.04)
    assert chosen.loc["alphaedit", "test_acc_delta"] == pytest.approx(
        -0.15
    )  # reported, not chosen on
    rng = np.random.default_rng(0)
    for _ in range(5):  # any Test values: the same choice
        df2 = df.copy()
        for c in [c for c in df2 if c.startswith("test_")]:
            df2[c] = rng.normal(size=len(df2))
        assert sweep.select(df2).set_index("method").loc["alphaedit", "config_id"] == "B"
    with pytest.raises(sweep.SweepError, match="not allowed"):
        sweep.select(df, {"metric": "test_acc_delta", "mode": "max"})


def test_selection_tie_breakers_and_order():
    rows = [
        {
            "method": "m",
            "config_id": c,
            "experiment": c,
            "val_acc_delta": 0.0,
            "edit_fix_ratio": f,
            "val_regression_rate": r,
            "index": i,
        }
        for i, (c, f, r) in enumerate([("X", 0.5, 0.1), ("Y", 0.9, 0.3), ("Z", 0.9, 0.2)])
    ]
    assert sweep.select(_summary(rows)).config_id.iloc[0] == "Z"


def test_pareto_front():
    fix = np.array([1.0, 0.5, 0.9, 0.5, np.nan])
    reg = np.array([0.9, 0.1, 0.9, 0.2, 0.0])
    assert plots.pareto_front(fix, reg).tolist() == [True, True, False, False, False]


def test_wandb_payload_uses_the_original_names_and_never_fills_zeros():
    row = {
        "test_acc_delta": 0.1,
        "test_stability": 0.9,
        "edit_fix_ratio": 1.0,
        "proj_stability": np.nan,
        "edit_time_seconds": None,
        "duration_seconds": 3.0,
    }
    p = sweep.wandb_payload(row)
    assert (
        p["test/accuracy_delta"] == 0.1 and p["edit/fix_rate"] == 1.0 and p["test/stability"] == 0.9
    )
    assert "proj/stability" not in p and "timing/edit_seconds" not in p


# --------------------------------------------------------------------------- executors
def test_plan_workers():
    assert executors.plan_workers(0, None, n_gpus=4) == (4, ["0", "1", "2", "3"])
    assert executors.plan_workers(2, None, n_gpus=0) == (2, [])
    assert executors.plan_workers(0, None, n_gpus=0) == (1, [])
    assert executors.plan_workers(3, 1, n_gpus=2) == (3, ["1"])
    with pytest.raises(ValueError, match="--gpu 5"):
        executors.plan_workers(1, 5, n_gpus=2)


def test_local_executor_pins_gpus_and_records_dead_and_timed_out_jobs(tmp_path):
    """A job that dies (like a dead kernel's worker) or overruns --timeout is recorded as failed
    with its error; the other jobs finish."""
    jobs = {}
    for name, code in [
        ("ok", "import os; print('GPU', os.environ['CUDA_VISIBLE_DEVICES'])"),
        ("dies", "import os; os._exit(3)"),
        ("slow", "import time; time.sleep(60)"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        runs.set_status(folder, "04_edit_alphaedit", "running")
        jobs[str(folder / "job.json")] = (folder, code)
    ex = executors.LocalExecutor(
        2, ["3", "5"], timeout=3, command=lambda j: [sys.executable, "-c", jobs[j][1]]
    )
    results = {r.job: r for r in ex.map(jobs)}
    by = {jobs[j][0].name: r for j, r in results.items()}
    assert by["ok"].ok and by["ok"].gpu in ("3", "5") and "GPU" in by["ok"].output_tail
    assert by["dies"].returncode == 3 and not by["dies"].ok
    assert by["slow"].timed_out and by["slow"].seconds < 30
    expected = {
        "dies": "worker exited with code 3",
        "slow": "timeout after",
    }  # each job its own reason
    for name, reason in expected.items():
        folder = jobs[str(tmp_path / name / "job.json")][0]
        sweep.settle(folder, ["04_edit_alphaedit"], by[name])
        st = runs.status(folder)["04_edit_alphaedit"]
        assert st["status"] == "failed" and st["error"].startswith(reason), (name, st)
        assert runs.RunFolder(folder).state(["04_edit_alphaedit"]) == "failed"


def test_a_wandb_trial_is_one_experiment_with_the_trials_values(tmp_path):
    f = tmp_path / "trial.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "name": "w",
                "params": [TINY],
                "methods": ["alphaedit"],
                "baselines": False,
                "grid": {"L2": [1e-4, 1e-2]},
            }
        )
    )
    args = sweep.build_parser().parse_args(
        ["trial", str(f), "L2=0.5", "num_edit_layers=2", "--sweep-dir", "x"]
    )
    argv = sweep.trial_argv(args)
    assert "--wandb" in argv and "--trial" in argv and argv[argv.index("--sweep-dir") + 1] == "x"
    exps = sweep.expand(sweep.spec_from_args(sweep.build_parser().parse_args(argv)))
    assert len(exps) == 1 and (exps[0].params["L2"], exps[0].params["num_edit_layers"]) == (0.5, 2)
    f.write_text(yaml.safe_dump({"name": "w", "params": [TINY], "methods": ["alphaedit", "memit"]}))
    with pytest.raises(SystemExit, match="one method"):
        sweep.trial_argv(sweep.build_parser().parse_args(["trial", str(f), "L2=0.5"]))


@pytest.mark.parametrize(
    "f", sorted((ROOT / "params" / "sweeps").glob("*.yaml")), ids=lambda p: p.name
)
def test_committed_sweep_specs_are_valid(f):
    raw = yaml.safe_load(f.read_text())
    if "program" in raw:  # a W&B sweep config: its parameters are ours, its metric is not Test
        from vitedit import params

        assert set(raw["parameters"]) <= set(params.SCHEMA)
        assert not raw["metric"]["name"].startswith("test")
        trial = ROOT / raw["command"][2]
        assert len(sweep.expand(sweep.check_spec(sweep.load_spec(trial)))) == 1
        return
    exps = sweep.expand(sweep.check_spec(sweep.load_spec(f)))
    assert exps and len({e.name for e in exps}) == len(exps)
    if (
        f.stem == "retinamnist_edit"
    ):  # the figure sweep: >= 12 edit configurations plus both baselines
        methods = [e.method for e in exps]
        assert methods.count("alphaedit") >= 12 and {
            "baseline_retrain",
            "baseline_finetune",
        } <= set(methods)


def test_timing_and_status_tables():
    s = pd.DataFrame(
        {
            "dataset": "d",
            "method": ["a", "a", "a", "b"],
            "status": ["ok", "ok", "failed", "ok"],
            "job_seconds": [20.0, 30.0, np.nan, 10.0],
            "papermill_overhead_seconds": [3.0, 4.0, np.nan, 2.0],
            "setup_cells_seconds": [7.0, 7.0, np.nan, 3.0],
            "work_seconds": [10.0, 18.0, np.nan, 5.0],
        }
    )
    t = sweep.timing_table(s)
    assert t.loc["a", "job_seconds"] == 25.0 and t.loc["a", "overhead_beyond_work_seconds"] == 11.0
    assert t.loc["b", "overhead_beyond_work_seconds"] == 5.0
    c = sweep.status_counts(s).set_index(["method", "status"]).experiments
    assert c[("a", "ok")] == 2 and c[("a", "failed")] == 1 and c[("b", "ok")] == 1


def test_a_parameter_without_effect_plans_one_edit_and_renamed_experiments_keep_their_folder(
    tmp_path,
):
    grid = {"head_verify_budget": [0.0, 0.01], "head_verify_backoff": ["scale", "sample"]}
    exps = sweep.expand(
        spec(
            tmp_path,
            methods=["head_nullspace"],
            baselines=[],
            grid={},
            method_grids={"head_nullspace": grid},
        )
    )
    # without a budget nothing backs off: one edit, not two, at budget 0
    assert sorted(
        (e.params["head_verify_budget"], e.params["head_verify_backoff"]) for e in exps
    ) == [(0.0, "scale"), (0.01, "sample"), (0.01, "scale")]
    # the folder of the same experiment planned before the back-off joined the grid is reused
    old = sweep.expand(
        spec(
            tmp_path,
            methods=["head_nullspace"],
            baselines=[],
            grid={},
            method_grids={"head_nullspace": {"head_verify_budget": [0.0, 0.01]}},
        )
    )
    sw = tmp_path / "sw"
    for e in old:
        d = e.folder(sw)
        d.mkdir(parents=True)
        (d / "job.json").write_text(json.dumps({"id": e.id, "method": e.method}))
    by_id = {e.id: e for e in old}
    for e in exps:
        if e.id in by_id:
            assert e.name != by_id[e.id].name and e.folder(sw) == by_id[e.id].folder(sw)
        else:
            assert e.folder(sw).name == e.name and not e.folder(sw).exists()
    assert sum(e.id in by_id for e in exps) == 2


def test_a_local_ray_start_that_timed_out_is_retried_and_other_errors_are_not():
    class FakeRay:
        def __init__(self, errors):
            self.errors, self.inits, self.shutdowns = list(errors), 0, 0

        def init(self, **kw):
            self.inits += 1
            if self.errors:
                raise self.errors.pop(0)

        def shutdown(self):
            self.shutdowns += 1

    slow = Exception("The current node timed out during startup. This could happen ...")
    ray = FakeRay([slow])
    executors._start_local_ray(ray, 2, {})
    assert (ray.inits, ray.shutdowns) == (2, 1)
    with pytest.raises(Exception, match="timed out"):
        executors._start_local_ray(FakeRay([slow] * 3), 2, {})
    other = FakeRay([ValueError("bad num_cpus")])
    with pytest.raises(ValueError):
        executors._start_local_ray(other, 2, {})
    assert other.inits == 1
