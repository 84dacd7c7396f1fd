"""Bad input, round two (issue 29): numbers out of range are refused up front, by name, and an edit
that made non-finite weights is never saved or recorded as a success."""

import copy

import numpy as np
import pytest
import torch
import yaml

from vitedit import cli, editors, methods, models, params, sweep
from vitedit.editors import records
from vitedit.params import ParamError
from vitedit.sweep import spec as sweep_spec

from conftest import ROOT

TINY = str(ROOT / "params" / "tiny.yaml")


@pytest.mark.parametrize(
    "key, value",
    [
        ("head_margin", float("inf")),
        ("ewc_lambda", float("inf")),
        ("noise_scale", float("inf")),
        ("L2", float("inf")),
        ("mom2_update_weight", float("inf")),
        ("clamp_norm_factor", float("inf")),
        ("v_lr", float("nan")),
        ("baseline_lr", float("-inf")),
    ],
)
def test_a_non_finite_float_is_refused_by_name(key, value):
    with pytest.raises(ParamError, match=f"'{key}' = {value} is not a finite number"):
        params.validate({key: value})


def test_every_float_parameter_refuses_inf():
    floats = [p.name for p in params.SCHEMA.values() if p.kind == "float"]
    assert len(floats) > 20
    for name in floats:
        with pytest.raises(ParamError, match="finite"):
            params.validate({name: float("inf")})


def test_a_non_finite_value_from_yaml_or_a_sweep_grid_is_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("head_margin: .inf\n")
    with pytest.raises(ParamError, match="head_margin"):
        params.resolve(f)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "s", "params": [TINY], "methods": ["head"], "baselines": False})
        + "method_grids: {head: {ewc_lambda: [1.0, .inf]}}\n"
    )
    with pytest.raises((ParamError, sweep_spec.SweepError), match="ewc_lambda"):
        sweep_spec.check_spec(sweep_spec.load_spec(spec))


@pytest.mark.parametrize("seed", [-1, -5, 2**32, 10**23])
def test_a_seed_outside_numpys_range_is_refused(seed):
    with pytest.raises(ParamError, match="'seed'.*0 .. 4294967295"):
        params.validate({"seed": seed})


def test_cli_refuses_a_bad_seed_before_writing(tmp_path, capsys):
    for args in (["--seed", "-1"], ["--seeds", "42", "-5"], ["--seed", str(10**23)]):
        with pytest.raises(SystemExit) as e:
            cli.main(
                ["--params", TINY, "--runs-dir", str(tmp_path / "runs"), "--stage", "data", *args]
            )
        assert e.value.code == 2 and "'seed'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_with_a_negative_seed_is_refused(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "params": [TINY], "seeds": [-1]}))
    with pytest.raises((ParamError, sweep_spec.SweepError), match="seed"):
        sweep_spec.check_spec(sweep_spec.load_spec(spec))


def test_an_edited_model_with_non_finite_weights_is_not_saved(trained_toy, tmp_path):
    _, _, _, model = trained_toy
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.head.weight[0, 0] = float("nan")
    result = editors.EditResult(bad, None, {"method": "head"})
    with pytest.raises(editors.EditError, match="non-finite weights.*head.weight.*lower"):
        records.record(tmp_path, result, {"sha256": "0" * 64, "path": "x"}, {"head_lr": 1e9}, None)
    assert not any(tmp_path.rglob("*.pt")) and not any(tmp_path.rglob("*.json"))


def test_memits_failed_solve_names_mom2_update_weight_not_l2(monkeypatch, trained_toy, tmp_path):
    """MEMIT has no L2: its advice names its own regulariser."""
    p, data, split, model = trained_toy

    def singular(*a, **k):
        raise editors.EditError(
            "the edit's solve returned non-finite values; increase its regulariser"
        )

    monkeypatch.setattr("vitedit.editors.layer.alphaedit_update", singular)
    runner = models.Runner(models.get_config("vit_tiny_test"), 32, "cpu")
    y = split.labels(data, "edit_discovery")
    pred = runner.probs(model, split.images(data, "edit_discovery")).numpy().argmax(1)
    errors = np.flatnonzero(pred != y)[:2]
    edit_set = editors.edit_data(data, split, editors.stats_positions(120, 30, 0), errors)
    q = {**params.defaults(), **p, "v_num_grad_steps": 2}
    stats = editors.StatsCache(tmp_path, {})
    for name, knob in (("memit", "mom2_update_weight"), ("alphaedit", "L2")):
        ed = methods.get(name).build(q, layers=[1], stats_cache=stats)
        with pytest.raises(editors.EditError, match=f"^{name}: .*\\({knob}, now"):
            ed.edit(model, runner, edit_set)


@pytest.mark.parametrize("key", ["v_lr", "v_weight_decay"])
def test_a_diverging_target_optimisation_names_its_settings(trained_toy, tmp_path, key):
    p, data, split, model = trained_toy
    runner = models.Runner(models.get_config("vit_tiny_test"), 32, "cpu")
    y = split.labels(data, "edit_discovery")
    pred = runner.probs(model, split.images(data, "edit_discovery")).numpy().argmax(1)
    errors = np.flatnonzero(pred != y)[:2]
    edit_set = editors.edit_data(data, split, editors.stats_positions(120, 30, 0), errors)
    q = {**params.defaults(), **p, "v_num_grad_steps": 3, key: 1e300}
    ed = methods.get("alphaedit").build(q, layers=[1], stats_cache=editors.StatsCache(tmp_path, {}))
    with pytest.raises(
        editors.EditError, match=f"^alphaedit: the target optimisation .*lower.*{key}="
    ):
        ed.edit(model, runner, edit_set)


def test_a_sweep_where_nothing_succeeded_still_gets_a_summary_that_says_so(tmp_path, retina_path):
    from vitedit.sweep import run as sweep_run

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {"name": "s", "params": [TINY], "methods": ["head"], "baselines": False, "seeds": [1]}
        )
    )
    spec = sweep_spec.check_spec(sweep_spec.load_spec(spec_file))
    exps = [
        e
        for e in sweep.expand(spec)
        if not e.params.update(data_path=str(retina_path))  # every experiment, on the real file
    ]
    sw = tmp_path / "sw"
    for e in exps:  # the shared stages failed: no experiment could start
        assert sweep_run._prepare(e, sw, spec, None, {e.prep.id: "boom"}) is None
    (tmp_path / "sw" / "sweep.yaml").write_text(yaml.safe_dump(spec))
    tables = sweep.collect(sw)
    (table,) = tables.values()
    assert len(table) == len(exps) and (table.status == "failed").all()
    assert table.error.str.contains("boom").all() and not table.selected.any()
    assert (sw / "selection.csv").is_file()


def test_a_negative_timeout_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["run", "params/sweeps/benchmark.yaml", "--timeout", "-5", "--dry-run"])
    assert e.value.code == 2 and "positive number of seconds" in capsys.readouterr().err


class _Recorder:
    """An executor that runs nothing and records what it was given."""

    name, workers, timeout = "recorder", 1, None

    def __init__(self):
        self.jobs = []

    def map(self, jobs):
        self.jobs += list(jobs)
        return iter(())


def test_a_corrupt_metrics_or_status_file_is_reported_and_redone(tmp_path, retina_path):
    from vitedit import runs
    from vitedit.sweep import run as sweep_run

    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "params": [TINY],
                "methods": ["head"],
                "baselines": False,
                "seeds": [1],
                "method_grids": {"head": {"ewc_lambda": [1.0, 2.0]}},
            }
        )
    )
    spec = sweep_spec.check_spec(sweep_spec.load_spec(spec_file))
    exps = [e for e in sweep.expand(spec) if not e.params.update(data_path=str(retina_path))]
    assert len(exps) == 2
    sw = tmp_path / "sw"
    prep = runs.RunFolder(exps[0].prep.folder(sw))  # the shared stages are done
    for name in exps[0].prep.notebooks:
        prep.set_status(name, "ok")
    for e in exps:  # both finished, as far as their status says
        assert sweep_run._prepare(e, sw, spec, None, {e.prep.id: "x"}) is None
        folder = runs.RunFolder(e.folder(sw))
        folder.clear_status("sweep")
        for name in [*methods.get(e.method).inherits, *e.notebooks]:
            folder.set_status(name, "ok")
    (exps[1].folder(sw) / "metrics.json").write_text('{"methods": {"head": {"edit_fix')  # cut off
    (exps[0].folder(sw) / "status.json").write_bytes(b"\xff\xfe garbage")
    (sw / "sweep.yaml").write_text(yaml.safe_dump(spec))
    (table,) = sweep.collect(sw).values()
    assert table.error.str.contains("is corrupt").all() and (table.status == "failed").all()
    rec = _Recorder()
    sweep_run.run_sweep(spec, exps, sw, rec, log=lambda *a: None, progress=False)
    redone = [p for p in rec.jobs if "unit" not in p and p.endswith("job.json")]
    assert len(redone) == 2, rec.jobs  # both experiments are run again


def test_ctrl_c_during_a_stage_ends_with_one_line(tmp_path, retina_path, monkeypatch, capsys):
    from vitedit import execute

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "run_notebook", interrupted)
    rc = cli.main(
        ["--params", TINY, "--runs-dir", str(tmp_path / "runs"), "--data-path", str(retina_path)]
        + ["--checkpoint-dir", str(tmp_path / "ckpt"), "--stage", "data", "--run-name", "r"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1 and err[0].startswith("interrupted: 0 of 1 stages")
    assert "rerun the same command" in err[0] and "Traceback" not in err[0]
