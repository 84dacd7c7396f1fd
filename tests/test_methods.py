"""The method registry: one declaration per method, read by the CLI, the sweep and the notebooks;
the schema the only source of an editor's settings, the registry the only source of its name."""

import inspect

import numpy as np
import pytest

from vitedit import cli, editors, methods, models, params, stages
from vitedit.editors import records
from vitedit.sweep import keys as sweep_keys
from vitedit.sweep import plan, spec

SCHEMA = params.SCHEMA
EDITOR_STAGES = {"edit", "head", "baseline"}


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_editor_keywords_are_schema_keys_and_back(name):
    m = methods.get(name)
    sig = m.editor_keywords
    taken = set(sig)
    unknown = taken - set(SCHEMA) - set(m.fixed) - set(methods.CONTEXT_ARGS)
    assert not unknown, f"{m.editor} takes {unknown}: neither schema keys nor context arguments"
    assert set(m.params) <= taken, (
        f"{name} declares {set(m.params) - taken}, which {m.editor} does not take"
    )
    assert set(m.params) <= set(SCHEMA), (
        f"{name} declares non-schema keys {set(m.params) - set(SCHEMA)}"
    )
    assert set(m.context) <= set(methods.CONTEXT_ARGS) and set(m.fixed) <= taken
    # every schema key the editor takes is declared by a method built on it (else no sweep would hash it)
    declared = {k for o in methods.REGISTRY.values() if o.editor == m.editor for k in o.params}
    assert (taken & set(SCHEMA)) - declared == set(), (
        f"{m.editor}: schema keywords no method declares"
    )
    # no keyword default can drift from the schema: the editor takes every setting from the run
    defaults = {k for k, v in sig.items() if v.default is not inspect.Parameter.empty}
    assert not defaults, (
        f"{m.editor} has keyword defaults {sorted(defaults)}: the schema's are used"
    )


def test_every_editing_parameter_belongs_to_a_method():
    owned = set(methods.SHARED_KEYS) | {k for m in methods.REGISTRY.values() for k in m.params}
    stage_keys = {k for k, p in SCHEMA.items() if p.stage in EDITOR_STAGES}
    assert stage_keys - owned == set(), f"no registered method takes {stage_keys - owned}"


def test_build_passes_parameters_under_their_schema_names():
    p = params.resolve(
        {"L2": 0.5, "nullspace_threshold": 1e-3, "head_margin": 2.0, "head_error_weight": 3.0}
    )
    a = methods.get("alphaedit").build(p, layers=[2, 1], stats_cache=None)
    assert (a.L2, a.nullspace_threshold, a.null_space, a.layers) == (0.5, 1e-3, True, [1, 2])
    assert a.name == "alphaedit" and a.v_lr == params.defaults()["v_lr"]
    ablation = methods.get("alphaedit_noproj").build(p, layers=[1], stats_cache=None)
    assert ablation.null_space is False and ablation.name == "alphaedit_noproj"
    assert methods.get("memit").build(p, layers=[1], stats_cache=None).name == "memit"
    h = methods.get("head_closed_form").build(p)
    assert (h.name, h.head_margin, h.head_error_weight) == ("head_closed_form", 2.0, 3.0)
    with pytest.raises(TypeError, match="unexpected context"):
        methods.get("head").build(p, layers=[1])
    # the library's entry point: the schema's defaults, then what is given
    e = editors.build("head_guarded", head_keep_pull=3.0)
    assert (e.name, e.head_keep_pull, e.head_margin) == (
        "head_guarded",
        3.0,
        params.defaults()["head_margin"],
    )
    with pytest.raises(params.ParamError, match="head_keep_pul"):
        editors.build("head_guarded", head_keep_pul=3.0)


def test_an_editor_built_outside_the_registry_has_no_name_and_is_refused(trained_toy):
    """The name comes from the registry only: a hand-built editor cannot record a result."""
    _, data, split, model = trained_toy
    m = methods.get("head_closed_form")
    ed = m.editor_class(**{k: params.defaults()[k] for k in m.params})
    runner = models.Runner(models.get_config("vit_tiny_test"), 64, "cpu")
    with pytest.raises(editors.EditError, match="registry"):
        ed.edit(model, runner, _edit_set(data, split, model))


def _edit_set(data, split, model):
    """The editors' input as the stages build it: the toy model's first two Edit-Discovery errors,
    30 FT-Train statistics samples."""
    imgs, y = split.images(data, "edit_discovery"), split.labels(data, "edit_discovery")
    pred = models.predict_logits(model, imgs, models.get_config("vit_tiny_test")).argmax(1).numpy()
    wrong = np.flatnonzero(pred != y)[:2]
    assert len(wrong) == 2, "the toy model should make two Edit-Discovery errors"
    right = np.flatnonzero(pred == y)  # what head_anchored keeps
    return editors.edit_data(
        data, split, np.arange(30), wrong, heldout_keys=10, anchor_positions=right
    )


@pytest.mark.parametrize("name", methods.names())
def test_every_registered_method_runs_through_the_editor_interface(trained_toy, tmp_path, name):
    """Each registered method, built from the schema's defaults (a few made small), edits a
    trained model's two errors through ``edit(model, runner, data)``: the input model is left
    alone, the result carries the registered name, its log has the common columns, and its
    record is written under that name."""
    p0, data, split, model = trained_toy
    p = params.resolve(
        {k: v for k, v in p0.items() if k in params.SCHEMA},
        {"baseline_epochs": 1, "retrain_epochs": 1, "head_steps": 5, "v_num_grad_steps": 3},
    )
    m = methods.get(name)
    context = {
        "layers": [2, 3],
        "stats_cache": editors.StatsCache(tmp_path / "stats", {"toy": 1}),
        "params": p,
        "data": data,
        "split": split,
    }
    ed = m.build(p, **{k: context[k] for k in m.context})
    runner = models.Runner(models.get_config("vit_tiny_test"), 64, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    es = _edit_set(data, split, model)
    res = ed.edit(model, runner, es)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert res.info["method"] == name and list(res.log.columns[:9]) == editors.LOG_COLUMNS
    assert len(res.log) == 2 and np.isfinite(res.info["edit_seconds"])
    rec = records.record(tmp_path, res, {"path": "x", "sha256": "0" * 64}, {}, es)
    assert rec["method"] == name and (tmp_path / "edits" / f"{name}.json").is_file()


def test_everything_reads_the_registry():
    names = methods.names()
    assert SCHEMA["methods"].choices == tuple(names) and SCHEMA["methods"].default is None
    for name in names:  # the help texts list the registered methods, read from the registry
        assert name in SCHEMA["methods"].help
        assert name in cli.build_parser().format_help()
    edit = methods.names(baselines=False)
    opt = next(a for a in cli.build_parser()._actions if a.dest == "edit_method")
    assert list(opt.choices) == edit
    assert spec.edit_methods() == edit and set(spec.baseline_aliases().values()) == set(
        methods.names(baselines=True)
    )
    for nb in methods.EDIT_NOTEBOOKS + (methods.BASELINE_NOTEBOOK,):
        for chosen in (names, None):  # None, the default: every registered method of it
            got = [m.name for m in stages.selected_methods({"methods": chosen}, nb)]
            assert got == methods.names(nb)


def test_a_new_method_is_one_registration(monkeypatch):
    """Registering a method makes it a CLI choice, a valid ``methods`` value, a sweep method with its
    own content hash (its keys only), and part of its notebook's loop."""
    new = methods.Method(
        "head_wide",
        "vitedit.editors.head_closed_form:HeadClosedFormEditor",
        "05_edit_head",
        ("ridge_lambda",),
        "test method",
        fixed={"head_margin": 1.0, "head_error_weight": 1.0},
        inactive_when={"ridge_lambda": ("head_margin", 0.25)},
    )
    monkeypatch.setitem(methods.REGISTRY, "head_wide", new)
    assert "head_wide" in methods.names("05_edit_head") and "head_wide" in spec.edit_methods()
    keys = plan.relevant_keys("head_wide")
    assert "ridge_lambda" in keys and "head_margin" not in keys and "L2" not in keys
    assert [
        m.name for m in stages.selected_methods({"methods": ["head_wide"]}, "05_edit_head")
    ] == ["head_wide"]
    assert plan.method_params("head_wide", {"methods": methods.names()})["methods"] == ["head_wide"]
    assert sweep_keys.inactive_when()["ridge_lambda"] == ("head_margin", 0.25)


def test_memit_does_not_depend_on_the_null_space_and_head_not_on_tracing():
    assert "nullspace_threshold" in plan.relevant_keys("alphaedit")
    assert "nullspace_threshold" not in plan.relevant_keys("memit")
    assert "num_ablations" in plan.relevant_keys(
        "memit"
    ) and "num_ablations" not in plan.relevant_keys("head")
    assert "baseline_lr" not in plan.relevant_keys("baseline_retrain")


def test_cli_edit_method_keeps_the_other_notebooks_methods():
    args = cli.build_parser().parse_args(["--stage", "edit", "--edit-method", "memit"])
    p = cli.resolve_params(args)
    others = [n for n in methods.names() if methods.get(n).notebook != "04_edit_alphaedit"]
    assert p["methods"] == ["memit", *others]
    args = cli.build_parser().parse_args(
        ["--stage", "edit", "--edit-method", "head", "--closed-form"]
    )
    assert cli.chosen_method(args) == "head_closed_form"
    args = cli.build_parser().parse_args(["--stage", "baseline2"])
    assert cli.resolve_params(args)["methods"][-1:] == ["baseline_finetune"]
    assert "baseline_retrain" not in cli.resolve_params(args)["methods"]
