"""The steps of notebooks 04-07 (``vitedit.stages``), on the tiny model trained on toy data."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vitedit import (
    checkpoints,
    comparison,
    editors,
    evaluation,
    locate,
    methods,
    models,
    stages,
    train,
)


@pytest.fixture
def ctx(trained_toy, tmp_path):
    p, data, split, model = trained_toy
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = train.fit(p, data, split, progress=False, log=lambda *a: None)  # the cached checkpoint
    assert result.reused
    ref = train.record_in_run(run_dir, result, split)
    p = dict(
        p,
        max_edits=4,
        projection_samples=40,
        eval_batch_size=64,
        bootstrap_samples=50,
        baseline_epochs=1,
        run_dir=str(run_dir),
    )
    cfg = models.get_config("vit_tiny_test")
    return stages.Context(
        run_dir=run_dir,
        params=p,
        data=data,
        split=split,
        device=torch.device("cpu"),
        model=model,
        meta=result.meta,
        cfg=cfg,
        base_ref=ref,
    )


def test_select_edits_takes_the_first_errors_and_seeded_statistics_samples(ctx):
    sel = stages.select_edits(ctx)
    y, pred, _ = evaluation.predictions(ctx.evaluator, ctx.model, "edit_discovery")
    assert np.array_equal(sel.errors, np.flatnonzero(y != pred)[:4]) and len(sel.errors) == 4
    n_ft = len(ctx.split.indices["ft_train"])
    assert np.array_equal(
        sel.stats_positions, editors.stats_positions(n_ft, 40, ctx.params["seed"])
    )
    assert (
        np.array_equal(sel.edit_set.labels, y[sel.errors])
        and (sel.edit_set.labels != pred[sel.errors]).all()
    )
    assert f"{n_ft - 40} held out" in sel.message


def test_the_swap_edits_and_traces_the_next_errors_and_anchors_read_no_label(ctx):
    """edit_selection 'second' (the cross-fit swap) edits the errors after the first max_edits and
    tracing traces those; the anchors (head_anchored, head_refit) are every sample not edited."""
    y, pred, _ = evaluation.predictions(ctx.evaluator, ctx.model, "edit_discovery")
    errs = np.flatnonzero(y != pred)
    assert len(errs) > 4, "the toy model makes too few errors for the test"
    first = stages.select_edits(ctx)
    assert np.array_equal(
        first.edit_set.anchor_positions, np.setdiff1d(np.arange(len(y)), first.errors)
    )
    ctx.params.update(edit_selection="second", max_samples=4)
    second = stages.select_edits(ctx)
    assert np.array_equal(second.errors, errs[4:8]) and not set(second.errors) & set(first.errors)
    assert np.array_equal(stages.find_errors(ctx).traced, errs[4:8])
    ctx.params.update(edit_selection="first")
    assert np.array_equal(stages.find_errors(ctx).traced, errs[:4])


def test_only_the_methods_built_on_the_anchors_labels_declare_that_they_read_them():
    """head_dfr and baseline_finetune_labelled fit the anchors at their true labels; head_anchored
    and head_refit keep them at the model's own decisions and must not be handed the labels."""
    readers = {n for n in methods.names() if methods.get(n).reads_anchor_labels}
    assert readers == {"head_dfr", "baseline_finetune_labelled"}


@pytest.mark.parametrize("name", methods.names())
def test_the_anchors_labels_reach_only_a_method_that_declares_it(ctx, monkeypatch, name):
    """The selection carries every anchor's true label, aligned with its position; run_method hands
    them to a method only when its declaration says it reads them (head_dfr,
    baseline_finetune_labelled), to no other, baselines included."""
    y = evaluation.predictions(ctx.evaluator, ctx.model, "edit_discovery")[0]
    sel = stages.select_edits(ctx)
    assert np.array_equal(sel.edit_set.anchor_labels, y[sel.edit_set.anchor_positions])
    seen = {}

    class Spy:
        def edit(self, model, runner, data):
            seen["labels"] = data.anchor_labels
            return None

    monkeypatch.setattr(methods.Method, "build", lambda self, params, **kw: Spy())
    monkeypatch.setattr("vitedit.stages.edit.editor_context", lambda method, ctx: {})  # no layers
    stages.edit.run_method(ctx, methods.get(name), sel)
    if methods.get(name).reads_anchor_labels:
        assert np.array_equal(seen["labels"], sel.edit_set.anchor_labels)
    else:
        assert seen["labels"] is None


def test_the_labelled_fine_tune_runs_through_the_stage_path_on_every_edit_discovery_sample(ctx):
    """Through run_method (the stages' and the sweep's path) finetune_labelled gets the anchors'
    labels its declaration asks for and trains on every Edit-Discovery sample; without the
    declaration the labels would be dropped and it would refuse to run."""
    ctx.params.update(baseline_epochs=1, baseline_lr=1e-3)
    sel = stages.select_edits(ctx)
    res, used = stages.edit.run_method(ctx, methods.get("baseline_finetune_labelled"), sel)
    n_ed = len(ctx.split.indices["edit_discovery"])
    assert res.info["status"] == "ok" and res.info["train_samples"] == n_ed
    assert used["baseline_epochs"] == 1 and len(res.log) == len(sel.errors)


def test_run_methods_runs_only_the_selected_methods_of_its_notebook_and_records_them(ctx):
    ctx.params["methods"] = ["head_closed_form", "alphaedit"]  # alphaedit belongs to 04, not 05
    sel = stages.select_edits(ctx)
    out = stages.run_methods(ctx, sel, "05_edit_head")
    assert list(out.results) == ["head_closed_form"] and list(out.summary.method) == [
        "head_closed_form"
    ]
    rec = json.loads((ctx.run_dir / "edits" / "head_closed_form.json").read_text())
    assert rec["settings"] == {
        "max_edits": 4,
        "edit_selection": "first",
        "edit_pair": None,
        "projection_samples": 40,
        **{k: ctx.params[k] for k in methods.get("head_closed_form").params},
        "seed": 0,
    }
    assert rec["edited_positions"] == sel.errors.tolist()
    assert set(pd.read_csv(ctx.run_dir / "head_edit_log.csv").method) == {"head_closed_form"}
    assert (ctx.run_dir / "head_edit_summary.csv").is_file()
    assert (
        out.fix_rates()["head_closed_form"] == out.results["head_closed_form"].log["fixed"].mean()
    )


def test_run_methods_builds_editors_from_the_params_under_their_names(ctx):
    ctx.params.update(methods=["head_closed_form"], head_margin=7.5, head_error_weight=1e4)
    out = stages.run_methods(ctx, stages.select_edits(ctx), "05_edit_head")
    direct = editors.HeadClosedFormEditor(
        **{k: ctx.params[k] for k in methods.get("head_closed_form").params}
    )
    direct.name = "head_closed_form"
    ref = direct.edit(ctx.model, ctx.runner, stages.select_edits(ctx).edit_set)
    got = out.results["head_closed_form"].model.head.weight
    assert torch.equal(got, ref.model.head.weight)


def test_evaluate_edits_evaluates_every_recorded_edit_and_refuses_another_base(ctx):
    ctx.params["methods"] = ["head", "head_closed_form"]
    stages.run_methods(ctx, stages.select_edits(ctx), "05_edit_head")
    ev = stages.evaluate_edits(ctx)
    assert set(ev.evals) == {"head", "head_closed_form"} and set(ev.table.method) == set(ev.evals)
    metrics = comparison.load_metrics(ctx.run_dir)
    assert set(metrics.method) == {"head", "head_closed_form"}
    assert set(pd.read_csv(ctx.run_dir / "per_class_test_accuracy.csv").method) == set(ev.evals)
    assert len(ev.level("test_set")) == 2
    ctx.base_ref = dict(ctx.base_ref, sha256="0" * 64)
    with pytest.raises(editors.EditError, match="another checkpoint"):
        stages.evaluate_edits(ctx)


def test_run_baselines_records_and_evaluates_like_the_edit_methods(ctx):
    ctx.params["methods"] = ["baseline_finetune"]
    ev = stages.run_baselines(ctx, stages.select_edits(ctx))
    assert list(ev.evals) == ["baseline_finetune"] and not ev.skipped
    rec = json.loads((ctx.run_dir / "edits" / "baseline_finetune.json").read_text())
    assert (
        rec["settings"]["baseline_lr"] == ctx.params["baseline_lr"]
        and "progress" not in rec["settings"]
    )
    assert (ctx.run_dir / "baseline_finetune_errors_summary.csv").is_file()
    assert "baseline_finetune" in set(comparison.load_metrics(ctx.run_dir).method)


def test_a_baseline_with_nothing_to_train_on_is_recorded_skipped(ctx):
    ctx.params.update(methods=["baseline_finetune"])
    sel = stages.select_edits(ctx)
    empty = stages.Selection(
        labels=sel.labels,
        pred=sel.labels,
        errors=sel.errors[:0],
        stats_positions=sel.stats_positions,
        edit_set=editors.edit_data(ctx.data, ctx.split, sel.stats_positions, sel.errors[:0]),
        n_ft_train=sel.n_ft_train,
    )
    ev = stages.run_baselines(ctx, empty)
    assert ev.evals == {} and "baseline_finetune" in ev.skipped
    rec = json.loads((ctx.run_dir / "edits" / "baseline_finetune.json").read_text())
    assert rec["status"] == "skipped" and "No errors to edit" in empty.message


def test_every_edit_notebook_method_has_its_output_files():
    for nb in methods.EDIT_NOTEBOOKS:
        assert nb in stages.OUTPUTS


def test_a_newly_registered_method_runs_records_and_evaluates_under_its_own_name(ctx, monkeypatch):
    """One registration is enough: the notebook's loop runs it, its record and metrics carry its name,
    and the method sharing its editor class is not overwritten."""
    new = methods.Method(
        "head_wide",
        "vitedit.editors.head_closed_form:HeadClosedFormEditor",
        "05_edit_head",
        tuple(k for k in methods.get("head_closed_form").params if k != "head_error_weight"),
        "test method",
        fixed={"head_error_weight": 10.0},
    )
    monkeypatch.setitem(methods.REGISTRY, "head_wide", new)
    ctx.params.update(methods=["head_closed_form", "head_wide"], head_margin=3.0)
    out = stages.run_methods(ctx, stages.select_edits(ctx), "05_edit_head")
    assert list(out.results) == ["head_closed_form", "head_wide"]
    recs = {m: json.loads((ctx.run_dir / "edits" / f"{m}.json").read_text()) for m in out.results}
    assert (
        recs["head_wide"]["method"] == "head_wide"
        and recs["head_closed_form"]["method"] == "head_closed_form"
    )
    assert "head_error_weight" not in recs["head_wide"]["settings"]
    assert recs["head_wide"]["checkpoint"] != recs["head_closed_form"]["checkpoint"]
    ev = stages.evaluate_edits(ctx)
    assert set(ev.evals) == {"head_closed_form", "head_wide"}


def test_load_context_and_trace_on_a_run_folder(trained_toy, tmp_path, monkeypatch):
    from vitedit import datasets, nb, params, splits

    p, data, split, _ = trained_toy
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    splits.save(split, run_dir, data)
    train.record_in_run(
        run_dir, train.fit(p, data, split, progress=False, log=lambda *a: None), split
    )
    monkeypatch.setattr(datasets, "load", lambda q, **kw: data)  # the toy data has no file
    q = params.resolve(
        {k: v for k, v in p.items() if k != "run_dir"},
        {
            "num_ablations": 3,
            "max_samples": 3,
            "noise_samples": 20,
            "run_dir": str(run_dir),
            "progress": False,
        },
    )
    ctx = stages.load_context(nb.Run("03_locate", run_dir, q))
    assert (
        ctx.base_ref["sha256"] == checkpoints.run_checkpoint_ref(run_dir)["sha256"]
        and "blocks" in ctx.description
    )
    err = stages.find_errors(ctx)
    y, pred, _ = evaluation.predictions(ctx.evaluator, ctx.model, "edit_discovery")
    assert np.array_equal(err.all, np.flatnonzero(y != pred)) and np.array_equal(
        err.traced, err.all[:3]
    )
    assert err.crosstab().to_numpy().sum() == len(err.all)
    tr = stages.trace(ctx, err)
    assert set(tr.importance["sample"]) == set(err.traced.tolist()) and len(tr.noise) == 3
    assert (run_dir / "layer_importance.csv").is_file() and (
        run_dir / "layer_statistics.csv"
    ).is_file()
    assert tr.noise_std > 0 and "3 noisy copies" in tr.message
    ctx.params.update(attribution_samples=2, attribution_masks=8)
    picked, maps = stages.attribution_maps(ctx, err)
    assert np.array_equal(picked, err.traced[:2]) and len(maps) == 2
    choice, summary = stages.hand_over_layers(ctx, tr, err, 1.0)
    assert locate.load_edit_layers(run_dir) == choice and summary["n_traced"] == len(
        set(err.traced.tolist())
    )
    with pytest.raises(locate.LocateError, match="99"):  # a layer the model does not have
        stages.load_context(nb.Run("03_locate", run_dir, dict(q, edit_layers=[99])))
