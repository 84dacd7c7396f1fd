import json

import pytest
import yaml

from vitedit import params, runs
from vitedit.params import ParamError

from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def test_base_yaml_lists_every_parameter_with_its_default():
    assert (ROOT / "params" / "base.yaml").read_text() == params.render_base_yaml(), (
        "regenerate: python -m vitedit.params > params/base.yaml"
    )
    base = yaml.safe_load((ROOT / "params" / "base.yaml").read_text())
    assert set(base) == set(params.SCHEMA)
    assert params.resolve(ROOT / "params" / "base.yaml") == params.defaults()


@pytest.mark.parametrize("f", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_file_is_valid(f):
    params.resolve(f)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epoch: 3\n")
    with pytest.raises(ParamError, match=r"unknown parameter 'epoch'.*Did you mean 'epochs'"):
        params.resolve(f)


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": "ten"},
        {"ft_train_ratio": 1.0},
        {"ft_train_ratio": 0},
        {"augment": "maybe"},
        {"size": 32},
        {"seed": 1.5},
        {"dataset": None},
        {"lr": -1},
        {"device": "tpu"},
    ],
)
def test_bad_values_are_rejected(bad):
    with pytest.raises(ParamError, match=list(bad)[0]):
        params.resolve(bad)


def test_yaml_scientific_notation_becomes_a_float(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("lr: 1e-4\n")  # PyYAML reads this as a string
    assert params.resolve(f)["lr"] == pytest.approx(1e-4)


def test_layers_apply_in_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("seed: 1\nepochs: 5\n")
    b.write_text("seed: 2\n")
    p = params.resolve(a, b, {"batch_size": 8})
    assert (p["seed"], p["epochs"], p["batch_size"]) == (2, 5, 8)


def test_lists_accept_yaml_lists_and_strings():
    p = params.resolve({"edit_layers": "9, 10 11", "trace_scopes": ["cls", "all"]})
    assert p["edit_layers"] == [9, 10, 11] and p["trace_scopes"] == ["cls", "all"]
    for bad in ({"trace_kinds": ["mlp", "blok"]}, {"edit_layers": [1.5]}, {"trace_scopes": []}):
        with pytest.raises(ParamError):
            params.resolve(bad)


def test_parse_assignment():
    assert params.parse_assignment("epochs=3") == ("epochs", 3)
    assert params.parse_assignment("data_path=") == ("data_path", None)
    with pytest.raises(ParamError):
        params.parse_assignment("nonsense=1")


def _nb(name):
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


@pytest.mark.parametrize(
    "name",
    [
        "01_split",
        "02_train",
        "03_locate",
        "04_edit_alphaedit",
        "05_edit_head",
        "06_evaluate",
        "07_baselines",
    ],
)
def test_notebooks_are_clean_and_parameterised(name):
    import papermill as pm

    nb = _nb(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in code), (
        "commit notebooks clean"
    )
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    declared = pm.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    defaults = params.defaults()
    from vitedit import nb as nb_mod

    assert declared.pop(nb_mod.PARAMS_FILE)["default"] == "None"  # papermill -p params_file FILE
    for key, spec in declared.items():
        assert key in params.SCHEMA, f"{name} declares {key}, which the schema lacks"
        assert eval(spec["default"]) == defaults[key], (
            f"{name}: default of {key} differs from the schema"
        )


@pytest.mark.parametrize("name", [n for n in runs.NOTEBOOKS])
def test_every_parameter_reaches_a_notebook_whether_its_cell_declares_it_or_not(name, tmp_path):
    """The CLI and the sweep pass a notebook its declared parameters and a parameter file of the
    execution with all of them: what the notebook resolves is exactly the run's parameters, so a
    new method's parameter needs no line in any notebook."""
    from vitedit import execute, nb

    run_dir = tmp_path / "run"
    p = params.resolve(
        {"head_keep_pull": 7.0, "L2": 0.25, "epochs": 3, "seed": 5, "run_dir": str(run_dir)}
    )
    given = execute.stage_parameters(name, run_dir, p)
    declared = set(execute.notebook_parameters(name))
    assert nb.PARAMS_FILE in declared and "run_dir" in declared
    assert set(given) <= declared | {"run_dir"}
    got = nb.start(name, dict(given), set()).params
    assert got == {**p, "run_dir": str(run_dir)}
    assert not run_dir.joinpath("params.yaml").exists()  # nothing written but the execution's file


def test_collect_takes_only_names_defined_after_the_marker():
    from vitedit import nb

    ns = {"x_before": 1}
    before = set(ns)
    ns.update({"epochs": 3, "_hidden": 1, "In": [], "json": json})
    assert nb.collect(ns, before) == {"epochs": 3}
    ns["epochz"] = 4
    with pytest.raises(ParamError, match="epochz"):
        nb.start("02_train", ns, before)


def test_a_notebook_reads_its_parameters_at_the_first_start_and_only_those_when_run_again():
    """The notebooks call nb.start(stage, globals()) right after their parameters cell: the first
    call takes every plain name (a mistyped one is an error); run again in the same kernel it
    ignores the notebook's own variables but still refuses a new, mistyped parameter."""
    from vitedit import nb

    ns = {"nb": nb, "In": [], "_": None, "dataset": "retinamnist", "epochs": 3, "run_dir": None}
    assert nb.collect(ns) == {"dataset": "retinamnist", "epochs": 3, "run_dir": None}
    ns.update({"P": {"epochs": 3}, "n": 7, "acc": 0.5, "epochs": 4})  # the notebook ran on
    assert nb.collect(ns) == {"dataset": "retinamnist", "epochs": 4, "run_dir": None}
    ns["epoch"] = 5  # typed anew in the parameters cell, then run again
    with pytest.raises(ParamError, match="'epoch'.*did you mean 'epochs'"):
        nb.collect(ns)
    fresh = {"nb": nb, "sede": 1, "run_dir": None}  # papermill injected a mistyped name
    with pytest.raises(ParamError, match="sede"):
        nb.start("01_split", fresh)


def test_a_params_file_fills_what_the_other_parameters_leave_at_their_default():
    from vitedit import nb

    given = {"dataset": "retinamnist", "seed": 7, "params_file": "params/bloodmnist.yaml"}
    got = nb.from_params_file(given)
    blood = params.read_mapping(ROOT / "params" / "bloodmnist.yaml")
    assert got["dataset"] == "bloodmnist" and got["epochs"] == blood["epochs"]  # from the file
    assert got["seed"] == 7 and "params_file" not in got  # an explicit value wins
    assert nb.from_params_file({"seed": 7}) == {"seed": 7}


def test_notebooks_are_valid_nbformat_with_stable_cell_ids():
    """The .ipynb files are the source (edited in JupyterLab): valid, every cell with an id."""
    import nbformat

    files = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(files) == 9
    for f in files:
        nb = nbformat.read(f, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), (
            f"{f.name}: commit it clean (make strip)"
        )
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), f"{f.name}: cells need unique ids"


def test_the_first_runs_strengths_are_points_of_its_design_sweep():
    """make smoke runs params/first_run.yaml: every strength it sets is a point of the grid that
    params/sweeps/first_run.yaml searched on FT-Val for its model (where its comments come from)."""
    import yaml

    first = params.read_mapping(ROOT / "params" / "first_run.yaml")
    params.resolve(first)  # every key a parameter, every value valid
    assert first["dataset"] == "bloodmnist"  # real data, fetchable with --download
    assert "params/first_run.yaml" in (ROOT / "Makefile").read_text()
    sweep = yaml.safe_load((ROOT / "params" / "sweeps" / "first_run.yaml").read_text())
    grids = {k: v for g in sweep["method_grids"].values() for k, v in g.items()}
    searched = [k for k in first if k in grids]
    assert len(searched) >= 8, searched
    for k in searched:
        assert first[k] in grids[k], (k, first[k], grids[k])
