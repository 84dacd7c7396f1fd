"""The method registry: one declaration per method, read by the CLI, the sweep and the notebooks."""

import inspect

import pytest

from vitedit import cli, methods, params, stages
from vitedit.sweep import plan, spec

SCHEMA = params.SCHEMA
EDITOR_STAGES = {"edit", "head", "baseline"}


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_editor_keywords_are_schema_keys_and_back(name):
    m = methods.get(name)
    sig = inspect.signature(m.editor_class.__init__).parameters
    taken = {k for k in sig if k != "self"}
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


def test_every_editing_parameter_belongs_to_a_method():
    owned = set(methods.SHARED_KEYS) | {k for m in methods.REGISTRY.values() for k in m.params}
    stage_keys = {k for k, p in SCHEMA.items() if p.stage in EDITOR_STAGES}
    assert stage_keys - owned == set(), f"no registered method takes {stage_keys - owned}"


def test_build_passes_parameters_under_their_schema_names():
    p = params.resolve(
        {"L2": 0.5, "nullspace_threshold": 1e-3, "head_margin": 2.0, "head_error_weight": 3.0}
    )
    a = methods.get("alphaedit").build(p, layers=[2, 1], cache_dir=None, cache_key={})
    assert (a.L2, a.nullspace_threshold, a.null_space, a.layers) == (0.5, 1e-3, True, [1, 2])
    assert (
        methods.get("memit").build(p, layers=[1], cache_dir=None, cache_key={}).null_space is False
    )
    h = methods.get("head_closed_form").build(p)
    assert (h.closed_form, h.margin, h.error_weight) == (True, 2.0, 3.0)
    with pytest.raises(TypeError, match="unexpected context"):
        methods.get("head").build(p, layers=[1])


def test_everything_reads_the_registry():
    names = methods.names()
    assert SCHEMA["methods"].choices == tuple(names) and SCHEMA["methods"].default == names
    edit = methods.names(baselines=False)
    opt = next(a for a in cli.build_parser()._actions if a.dest == "edit_method")
    assert list(opt.choices) == edit
    assert spec.edit_methods() == edit and set(spec.baseline_aliases().values()) == set(
        methods.names(baselines=True)
    )
    for nb in methods.EDIT_NOTEBOOKS + (methods.BASELINE_NOTEBOOK,):
        assert [m.name for m in stages.selected_methods({"methods": names}, nb)] == methods.names(
            nb
        )


def test_a_new_method_is_one_registration(monkeypatch):
    """Registering a method makes it a CLI choice, a valid ``methods`` value, a sweep method with its
    own content hash (its keys only), and part of its notebook's loop."""
    new = methods.Method(
        "head_wide",
        "vitedit.editing:HeadEditor",
        "05_edit_head",
        ("ridge_lambda",),
        "test method",
        fixed={"closed_form": True},
    )
    monkeypatch.setitem(methods.REGISTRY, "head_wide", new)
    assert "head_wide" in methods.names("05_edit_head") and "head_wide" in spec.edit_methods()
    keys = plan.relevant_keys("head_wide")
    assert "ridge_lambda" in keys and "head_margin" not in keys and "L2" not in keys
    assert [
        m.name for m in stages.selected_methods({"methods": ["head_wide"]}, "05_edit_head")
    ] == ["head_wide"]
    assert plan.method_params("head_wide", {"methods": methods.names()})["methods"] == ["head_wide"]


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
    assert p["methods"] == [
        "memit",
        "head",
        "head_closed_form",
        "head_nullspace",
        "head_guarded",
        "baseline_retrain",
        "baseline_finetune",
    ]
    args = cli.build_parser().parse_args(
        ["--stage", "edit", "--edit-method", "head", "--closed-form"]
    )
    assert cli.chosen_method(args) == "head_closed_form"
    args = cli.build_parser().parse_args(["--stage", "baseline2"])
    assert cli.resolve_params(args)["methods"][-1:] == ["baseline_finetune"]
    assert "baseline_retrain" not in cli.resolve_params(args)["methods"]
