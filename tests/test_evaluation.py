import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from vitedit import (
    baselines,
    checkpoints,
    columns,
    comparison,
    editors,
    evaluation,
    models,
    predcache,
    splits,
    train,
)

from conftest import synthetic_data, toy_params

SUMMARY_KEYS = [
    "method",
    "edit_time_seconds",
    "duration_seconds",
    "edit_total_wrong",
    "edit_num_fixed",
    "edit_fix_ratio",
    "test_total",
    "test_acc_before",
    "test_acc_after",
    "test_acc_delta",
    "test_correct_to_wrong",
    "test_wrong_to_correct",
    "proj_stability",
    "proj_regression_rate",
]


@pytest.fixture(scope="module")
def setup(trained_toy):
    p, data, split, model = trained_toy
    runner = models.Runner(models.get_config("vit_tiny_test"), 256, "cpu")
    ev = evaluation.Evaluator(data, split, runner, None, 0, 50)
    y, pred, _ = evaluation.predictions(ev, model, "edit_discovery")
    errors = np.flatnonzero(y != pred)[:5]
    stats_pos = editors.stats_positions(len(split.indices["ft_train"]), 40, 0)
    return p, data, split, model, ev, errors, stats_pos


def test_identical_models_change_nothing_and_held_out_excludes_the_statistics(setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    ev = evaluation.four_level(ev0, "same", model, model, errors, stats_pos)
    lv = ev["levels"]
    n_ft = len(split.indices["ft_train"])
    assert (
        lv["projection_samples"]["heldout_n"] == n_ft - 40
        and lv["projection_samples"]["insample_n"] == 40
    )
    assert lv["projection_samples"]["heldout_stability"] == 1.0 and lv["test_set"]["acc_delta"] == 0
    assert lv["test_set"]["mcnemar_p"] == 1.0 and lv["edit_samples"]["num_fixed"] == 0
    assert lv["edit_discovery_set"]["total"] == len(split.indices["edit_discovery"]) - len(errors)
    assert np.array_equal(ev["confusion"][0], ev["confusion"][1])


def test_summary_keeps_the_original_metric_names(setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    ev = evaluation.four_level(ev0, "same", model, model, errors, stats_pos)
    m = comparison.summary_metrics(ev, 1.0, 2.0)
    assert set(SUMMARY_KEYS) <= set(m) and m["edit_time_seconds"] == 1.0


def test_comparison_files_have_stable_schemas_and_merge_methods(tmp_path, setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    ev = evaluation.four_level(ev0, "a", model, model, errors, stats_pos)
    comparison.write_comparison(
        tmp_path, {"a": ev}, {"a": comparison.summary_metrics(ev, 1.0, 1.0)}
    )
    ev_b = evaluation.four_level(ev0, "b", model, model, errors, stats_pos)
    comparison.write_comparison(
        tmp_path, {"b": ev_b}, {"b": comparison.summary_metrics(ev_b, 1.0, 1.0)}
    )
    test = pd.read_csv(tmp_path / "comparative_evaluation_test_set.csv")
    assert list(test.method) == ["a", "b"]
    assert list(test.columns) == [
        "method",
        "total",
        "acc_before",
        "acc_after",
        "acc_delta",
        "delta_ci_low",
        "delta_ci_high",
        "correct_before",
        "correct_to_wrong",
        "wrong_to_correct",
        "regression_rate",
        "mcnemar_p",
        "stability",
        "f1_macro_before",
        "f1_macro_after",
        "auc_before",
        "auc_after",
        "majority_share",
        "edited_pairs",
        "same_pair_errors",
        "same_pair_wrong_to_correct",
        "same_pair_fix_rate",
        "pair_classes_correct",
        "pair_classes_correct_to_wrong",
        "pair_classes_regression_rate",
    ]
    cm = pd.read_csv(tmp_path / "confusion_matrix_edit.csv")
    assert list(cm.columns) == ["true", "pred", "count", "method"] and set(cm.method) == {"a", "b"}
    assert set(json.loads((tmp_path / "metrics.json").read_text())["methods"]) == {"a", "b"}


def test_baselines_with_nothing_to_train_are_skipped(setup):
    p, data, split, model, ev0, _, stats_pos = setup
    empty = editors.edit_data(data, split, stats_pos, np.array([], dtype=int))
    for name in ("baseline_retrain", "baseline_finetune"):
        b = editors.build(name, p, params=p, data=data, split=split, baseline_epochs=1)
        res = b.edit(model, ev0.runner, empty)
        assert res.info["status"] == "skipped" and res.info["reason"] and res.log.empty


def test_retrain_adds_exactly_the_errors_to_ft_train(setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    official = split.indices["edit_discovery"][errors]
    s2 = baselines.with_errors_in_training(split, official)
    assert set(s2.indices["ft_train"]) == set(split.indices["ft_train"]) | set(official)
    assert not set(s2.indices["edit_discovery"]) & set(official)
    splits.check_split(s2, data)


def test_finetune_baseline_moves_toward_the_errors_and_leaves_the_input_alone(setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    es = editors.edit_data(data, split, stats_pos, errors)
    tune = editors.build("baseline_finetune", baseline_lr=1e-2, baseline_epochs=20, seed=0)
    res = tune.edit(model, ev0.runner, es)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert res.log.p_true_after.mean() > res.log.p_true_before.mean()


def test_replay_keeps_the_statistics_samples_decisions_that_fine_tuning_on_errors_moves(setup):
    """The replay baseline sees what every editor sees: at the same learning rate and steps it
    changes fewer statistics-sample decisions than fine-tuning on the errors alone; with weight 0
    it is baseline 2 exactly."""
    p, data, split, model, ev0, errors, stats_pos = setup
    es = editors.edit_data(data, split, stats_pos, errors)
    kw = dict(baseline_lr=3e-2, baseline_epochs=30, seed=0)
    alone = editors.build("baseline_finetune", **kw).edit(model, ev0.runner, es)
    replay = editors.build("baseline_finetune_replay", replay_weight=3.0, **kw)
    res = replay.edit(model, ev0.runner, es)
    zero = editors.build("baseline_finetune_replay", replay_weight=0.0, **kw).edit(
        model, ev0.runner, es
    )
    assert all(torch.equal(a, b) for a, b in zip(alone.model.parameters(), zero.model.parameters()))
    base = ev0.runner.probs(model, es.stats_images).argmax(1)

    def moved(m):
        return int((ev0.runner.probs(m, es.stats_images).argmax(1) != base).sum())

    assert moved(alone.model) > 0, (
        "the recipe must move some decisions for the test to mean anything"
    )
    assert moved(res.model) < moved(alone.model)
    assert res.info["replay_samples"] == len(stats_pos) and res.info["replay_weight"] == 3.0
    assert res.log.p_true_after.mean() > res.log.p_true_before.mean()  # still fits the errors


def test_finetune_labelled_is_the_replay_fine_tune_on_every_labelled_edit_discovery_sample(setup):
    """finetune_labelled (issue 30) trains on the edited errors and the Edit-Discovery samples not
    edited, at their true labels: bit for bit the replay fine-tune given that union as its errors.
    It reads the anchors' labels (shuffled labels, another edit) and refuses an edit set without
    them, naming the fix."""
    import dataclasses

    p, data, split, model, ev0, errors, stats_pos = setup
    rest = np.setdiff1d(np.arange(len(split.indices["edit_discovery"])), errors)[:60]
    es = editors.edit_data(data, split, stats_pos, errors, anchor_positions=rest)
    kw = dict(baseline_lr=1e-2, baseline_epochs=2, seed=0, replay_weight=1.0)
    res = editors.build("baseline_finetune_labelled", **kw).edit(model, ev0.runner, es)
    assert res.info["train_samples"] == len(errors) + len(rest) and len(res.log) == len(errors)
    union = editors.edit_data(data, split, stats_pos, np.concatenate([errors, rest]))
    ref = editors.build("baseline_finetune_replay", **kw).edit(model, ev0.runner, union)
    assert all(torch.equal(a, b) for a, b in zip(res.model.parameters(), ref.model.parameters()))
    shuffled = dataclasses.replace(es, anchor_labels=np.roll(es.anchor_labels, 1))
    other = editors.build("baseline_finetune_labelled", **kw).edit(model, ev0.runner, shuffled)
    assert not all(
        torch.equal(a, b) for a, b in zip(res.model.parameters(), other.model.parameters())
    )
    for bad in (
        dataclasses.replace(es, anchor_labels=None),
        dataclasses.replace(es, anchor_labels=es.anchor_labels[:-1]),
    ):
        with pytest.raises(editors.EditError, match="anchor"):
            editors.build("baseline_finetune_labelled", **kw).edit(model, ev0.runner, bad)


@pytest.mark.parametrize(
    "method", ["baseline_finetune", "baseline_finetune_replay", "baseline_finetune_labelled"]
)
def test_a_grid_over_epochs_continues_one_fine_tuning_with_the_same_weights(
    setup, tmp_path, method
):
    """Given a statistics cache (the in-process benchmark's), the point of 7 epochs continues from
    the state the point of 3 left: the same weights as a fresh 7-epoch run, bit for bit; its
    edit_seconds count all 7 epochs; a point of fewer epochs than the kept state starts afresh."""
    from vitedit.editors.statistics import StatsCache

    p, data, split, model, ev0, errors, stats_pos = setup
    rest = np.setdiff1d(np.arange(len(split.indices["edit_discovery"])), errors)[:40]
    es = editors.edit_data(data, split, stats_pos, errors, anchor_positions=rest)
    kw = dict(baseline_lr=3e-2, seed=0) | (
        {} if method == "baseline_finetune" else {"replay_weight": 1.0}
    )
    cache = StatsCache(tmp_path)
    short = editors.build(method, baseline_epochs=3, stats_cache=cache, **kw).edit(
        model, ev0.runner, es
    )
    resumed = editors.build(method, baseline_epochs=7, stats_cache=cache, **kw).edit(
        model, ev0.runner, es
    )
    fresh = editors.build(method, baseline_epochs=7, **kw).edit(model, ev0.runner, es)
    again = editors.build(method, baseline_epochs=3, stats_cache=cache, **kw).edit(
        model, ev0.runner, es
    )
    assert resumed.info["resumed_from_epoch"] == 3 and fresh.info["resumed_from_epoch"] == 0
    assert again.info["resumed_from_epoch"] == 0
    assert not all(
        torch.equal(a, b) for a, b in zip(short.model.parameters(), fresh.model.parameters())
    )
    for a, b in ((resumed, fresh), (again, short)):
        assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert resumed.info["edit_seconds"] > short.info["edit_seconds"]
    other = editors.build(method, baseline_epochs=7, stats_cache=cache, **{**kw, "seed": 1})
    assert other.edit(model, ev0.runner, es).info["resumed_from_epoch"] == 0  # another seed


def test_the_before_model_is_the_selected_checkpoint_not_the_last_epoch(tmp_path):
    """Evaluation loads 'before' from the run's checkpoint: the best FT-Val epoch, even when
    training ran on."""
    data = synthetic_data(n_train=150, n_val=45, n_test=45)
    split = splits.make_split(data, 0.8, 0)
    p = toy_params(tmp_path / "ck", epochs=6, lr=0.05, warmup_frac=0.0)
    r = train.fit(p, data, split, progress=False, log=lambda *a: None)
    h = r.history
    assert r.meta["best_epoch"] < len(h), (
        "this recipe must select an earlier epoch for the test to mean anything"
    )
    train.record_in_run(tmp_path, r, split)
    before, _ = checkpoints.load_run_model(tmp_path, split)
    cfg = models.get_config("vit_tiny_test")
    val = train.evaluate(
        before, split.images(data, "ft_val"), split.labels(data, "ft_val"), cfg, 64, "cpu"
    )
    best = h[h.epoch == r.meta["best_epoch"]].iloc[0]
    last = h.iloc[-1]
    assert val["loss"] == pytest.approx(best.val_loss, rel=1e-5)
    assert (best.val_acc, best.val_loss) != (last.val_acc, last.val_loss)


def test_selection_level_is_ft_val_and_matches_direct_transitions(setup):
    """Level 5 (what a sweep selects on) is computed on FT-Val, never on Test."""
    p, data, split, model, ev0, errors, stats_pos = setup
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.bias[0] += 3.0  # push everything toward class 0: FT-Val predictions change
    ev = evaluation.four_level(ev0, "biased", model, other, errors, stats_pos)
    va = ev["levels"]["val_set"]
    y = split.labels(data, "ft_val")
    pb = ev0.runner.probs(model, split.images(data, "ft_val")).numpy().argmax(1)
    pa = ev0.runner.probs(other, split.images(data, "ft_val")).numpy().argmax(1)
    t = evaluation.transitions(y, pb, pa)
    assert (
        va["total"] == len(split.indices["ft_val"])
        and va["correct_to_wrong"] + va["wrong_to_correct"] > 0
    )
    assert (
        va["acc_delta"] == pytest.approx(t["acc_after"] - t["acc_before"])
        and va["correct_to_wrong"] == t["correct_to_wrong"]
    )
    m = comparison.summary_metrics(ev, 1.0, 1.0)
    assert m["val_regression_rate"] == pytest.approx(t["regression_rate"])
    assert m["val_net_fixed"] == t["wrong_to_correct"] - t["correct_to_wrong"]
    assert not any(k.startswith("test_") for k in columns.SELECTION_METRICS)


def test_damage_counts_and_per_error_outcomes_agree_on_a_trained_model(setup):
    """The figures vitedit.evidence pools (Test regression rate, counts, the fixed masks) from a
    trained model and an edit that changes its decisions."""
    p, data, split, model, ev0, errors, stats_pos = setup
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.bias[1] += 2.0
    ev = evaluation.four_level(ev0, "biased", model, other, errors, stats_pos)
    m = comparison.summary_metrics(ev, 1.0, 1.0)
    y = split.labels(data, "test")
    pb = ev0.runner.probs(model, split.images(data, "test")).numpy().argmax(1)
    pa = ev0.runner.probs(other, split.images(data, "test")).numpy().argmax(1)
    right = pb == y
    assert m["test_correct_before"] == right.sum() and m["test_correct_to_wrong"] > 0
    assert m["test_regression_rate"] == pytest.approx((right & (pa != y)).sum() / right.sum())
    mask = m["edit_fixed_mask"]
    assert set(mask) <= {"y", "n"} and len(mask) == m["edit_total_wrong"] == len(errors)
    assert mask.count("y") == m["edit_num_fixed"]
    rest = m["ed_rest_fixed_mask"]
    assert len(rest) == m["ed_rest_errors"] and rest.count("y") == m["ed_rest_wrong_to_correct"]
    ed = ev["levels"]["edit_discovery_set"]
    assert m["ed_rest_correct_before"] + m["ed_rest_errors"] == ed["total"]
    assert m["ed_rest_correct_to_wrong"] == ed["correct_to_wrong"]
    assert m["val_correct_to_wrong"] / m["val_correct_before"] == pytest.approx(
        m["val_regression_rate"]
    )
    assert m["proj_correct_to_wrong"] / m["proj_correct_before"] == pytest.approx(
        m["proj_regression_rate"]
    )
    same = comparison.summary_metrics(
        evaluation.four_level(ev0, "s", model, model, errors, stats_pos), 1, 1
    )
    assert same["edit_errors_digest"] == m["edit_errors_digest"]
    moved = evaluation.four_level(ev0, "s", model, model, errors[1:], stats_pos)
    assert comparison.summary_metrics(moved, 1, 1)["edit_errors_digest"] != m["edit_errors_digest"]


def test_baseline_summary_csv_is_ok_with_metrics_or_skipped_with_reason(tmp_path):
    f = baselines.write_summary(
        tmp_path, "baseline_retrain", {"method": "baseline_retrain", "edit_fix_ratio": 0.5}
    )
    assert f.name == "baseline_retrain_summary.csv"
    assert pd.read_csv(f).to_dict("records") == [
        {"method": "baseline_retrain", "edit_fix_ratio": 0.5, "status": "ok"}
    ]
    f = baselines.write_summary(tmp_path, "baseline_finetune", reason="no error samples")
    assert f.name == "baseline_finetune_errors_summary.csv"
    assert pd.read_csv(f).iloc[0].to_dict() == {
        "method": "baseline_finetune",
        "status": "skipped",
        "reason": "no error samples",
    }
    with pytest.raises(ValueError):
        baselines.write_summary(tmp_path, "baseline_retrain")


def test_prediction_cache_is_keyed_by_content_and_changes_nothing(tmp_path, setup):
    p, data, split, model, ev0, errors, stats_pos = setup
    head_edit = copy.deepcopy(model)
    with torch.no_grad():
        head_edit.head.bias[0] += 5.0  # another head on the same backbone
    layer_edit = copy.deepcopy(model)
    with torch.no_grad():
        next(layer_edit.blocks[0].parameters()).add_(0.05)  # another backbone

    def run(edited, cache):
        ev = evaluation.Evaluator(data, split, ev0.runner, cache, 0, 50)
        return evaluation.four_level(ev, "m", model, edited, errors, stats_pos)["levels"]

    plain = run(head_edit, None)
    assert run(head_edit, tmp_path) == plain
    # one features file per set (edit discovery, held-out and in-sample FT-Train, Test, FT-Val):
    # the head edit reads the base model's, computing no backbone pass of its own
    files = sorted(tmp_path.glob("*.features.npy"))
    assert len(files) == 5 and not list(tmp_path.glob("*.tmp"))
    assert run(head_edit, tmp_path) == plain  # read back, nothing recomputed or added
    assert sorted(tmp_path.glob("*.features.npy")) == files
    assert run(layer_edit, tmp_path) == run(layer_edit, None)
    assert len(list(tmp_path.glob("*.features.npy"))) == 10  # a new backbone: its own features
    # bit for bit what a full forward pass gives (same batches, fp32)
    imgs = split.view(data, "test")
    small = models.Runner(ev0.runner.cfg, 64, "cpu")
    for m in (model, head_edit, layer_edit):
        full = small.probs(m, imgs).numpy()
        assert np.array_equal(predcache.cached_probs(m, imgs, small, tmp_path), full)
    key = predcache.prediction_key
    r = ev0.runner
    assert key(model, imgs, r) != key(head_edit, imgs, r)
    assert key(model, imgs, r, "head.") == key(head_edit, imgs, r, "head.")
    assert key(model, imgs, r, "head.") != key(layer_edit, imgs, r, "head.")
    pixel = np.array(imgs[: len(imgs)])
    pixel.flat[0] ^= 1  # one pixel, same shape: the images' bytes are in the key
    assert key(model, pixel, r) != key(model, np.array(imgs[: len(imgs)]), r)
    # a split's view is keyed by its (read-only) source's memoised key and its indices
    assert not imgs.source.flags.writeable
    assert key(model, imgs, r) == key(model, split.view(data, "test"), r)

    class Unread(splits.ImageView):
        def __getitem__(self, key):
            raise AssertionError("the key read the view's images")

    assert key(model, Unread(imgs.source, imgs.index), r) == key(model, imgs, r)
    other = split.view(data, "test", np.arange(len(imgs))[::-1])  # same images, another order
    assert key(model, other, r) != key(model, imgs, r)
    copied = splits.ImageView(np.array(imgs.source), imgs.index)  # writeable: hashed by bytes
    before = key(model, copied, r)
    copied.source[imgs.index[0]].flat[0] ^= 1
    assert key(model, copied, r) != before
    # a truncated or empty file (a killed writer) is recomputed and written back, not read
    files[0].write_bytes(b"\x93NUMPY")
    files[1].write_bytes(b"")
    assert run(head_edit, tmp_path) == plain
    assert all(np.load(f).ndim == 2 for f in files[:2])


def test_weights_fixed_reads_each_models_weights_once_and_keeps_the_keys(setup, monkeypatch):
    """Inside ``weights_fixed`` a model's weights are hashed once for every set's key (issue 26),
    the keys are those computed without it, and outside it a changed model gets a new key."""
    p, data, split, model, ev0, errors, stats_pos = setup
    r, key = ev0.runner, predcache.prediction_key
    sets = [split.view(data, n) for n in ("test", "ft_val", "edit_discovery")]
    plain = [key(model, s, r, "head.") for s in sets] + [key(model, sets[0], r)]
    passes = []
    hash_weights = predcache._hash_weights
    monkeypatch.setattr(
        predcache, "_hash_weights", lambda m, skip: passes.append(skip) or hash_weights(m, skip)
    )
    with predcache.weights_fixed(model):
        inside = [key(model, s, r, "head.") for s in sets] + [key(model, sets[0], r)]
        with predcache.weights_fixed(model):  # nested: still the outer block's hashers
            assert key(model, sets[1], r, "head.") == plain[1]
    assert inside == plain and passes == ["head.", None]  # one pass per model and skip
    saved = model.head.bias.detach().clone()
    with torch.no_grad():
        model.head.bias[0] += 1.0
    try:
        assert key(model, sets[0], r) != plain[3]  # out of the block: hashed again
        assert len(passes) == 3
    finally:
        with torch.no_grad():
            model.head.bias.copy_(saved)  # the fixture's model, bit for bit


def test_the_retrain_reference_trains_on_ft_train_plus_the_errors_and_judges_on_test(
    trained_toy, tmp_path, monkeypatch
):
    """benchmarks/bench_retrain_reference.py (issue 30's reference) retrains through the registry's
    baseline_retrain on FT-Train plus the base model's Edit-Discovery errors (all, or the first
    max_edits) and compares the two models on FT-Val and Test; a rerun reuses the retrained
    checkpoint and reports the seconds recorded when it trained."""
    import importlib.util
    import shutil
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_retrain_reference.py"
    spec = importlib.util.spec_from_file_location("bench_retrain_reference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    p, data, split, model = trained_toy
    shutil.copytree(p["checkpoint_dir"], tmp_path / "ck")
    p = dict(p, checkpoint_dir=str(tmp_path / "ck"), max_edits=2)
    runner = models.Runner(models.get_config("vit_tiny_test"), 64, "cpu")
    ev = evaluation.Evaluator(data, split, runner, None, 0, 50)
    y, pred, _ = evaluation.predictions(ev, model, "edit_discovery")
    wrong = np.flatnonzero(y != pred)
    assert len(wrong) > 2, "the toy model should make more Edit-Discovery errors than max_edits"
    ed = split.indices["edit_discovery"]
    fitted = []  # what each retrain trained on, and the model it returned
    real_fit = train.fit

    def spy(params, data_, split_, **kw):
        r = real_fit(params, data_, split_, **kw)
        fitted.append((split_.indices["ft_train"], r.model))
        return r

    monkeypatch.setattr(train, "fit", spy)
    rows = [bench.retrain_row(p, data, 0, e) for e in ("all", "first", "first", "control")]
    ft = split.indices["ft_train"]
    added = [ed[wrong], ed[wrong[:2]], ed[wrong[:2]]]
    for (trained_on, _), extra in zip(fitted, added):
        assert np.array_equal(np.sort(trained_on), np.union1d(ft, extra))
    control = np.setdiff1d(fitted[3][0], ft)
    k = min(len(wrong), len(y) - len(wrong))  # as many right samples as errors, if there are
    assert len(control) == k and not set(control) & set(ed[wrong])  # all right before
    assert [r["n_errors_added"] for r in rows] == [len(wrong), 2, 2, k]
    assert not rows[1]["reused"] and rows[2]["reused"]
    # reused: the epochs' seconds recorded when it trained (not the time to load it)
    assert 0 < rows[2]["train_seconds"] <= rows[1]["train_seconds"]
    yt = split.labels(data, "test")
    acc0 = float((evaluation.predictions(ev, model, "test")[1] == yt).mean())
    for r, (_, m) in zip(rows, fitted):
        acc = float((evaluation.predictions(ev, m, "test")[1] == yt).mean())
        assert r["test_delta_points"] == pytest.approx(100 * (acc - acc0))
        assert r["test_n"] == len(yt) and "ft_val_delta_points" not in r
    assert rows[0]["test_fixed"] + rows[0]["test_broken"] > 0, "the retrain is another model"
    with pytest.raises(ValueError, match="each once"):  # rows[2] repeats rows[1]'s seed (reused)
        bench.summarise(pd.DataFrame(rows))
    table = bench.summarise(pd.DataFrame([rows[0], rows[1], rows[3]]))
    assert list(table.errors) == ["all", "first", "control"] and list(table.seeds) == [1, 1, 1]
