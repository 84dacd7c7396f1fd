"""The in-process path's reuse across grid points: each reuse gives the figures of a fresh run."""

import json

import numpy as np
import torch

from vitedit import editors, methods, models, params


def _errors(trained_toy):
    p, data, split, model = trained_toy
    runner = models.Runner(models.get_config("vit_tiny_test"), 32, "cpu")
    y = split.labels(data, "edit_discovery")
    pred = runner.probs(model, split.images(data, "edit_discovery")).numpy().argmax(1)
    errors = np.flatnonzero(pred != y)[:3]
    assert len(errors), "the toy model makes no Edit-Discovery error"
    stats = editors.stats_positions(len(split.indices["ft_train"]), 40, 0)
    return (
        {**params.defaults(), **p, "v_num_grad_steps": 5},
        model,
        runner,
        editors.edit_data(data, split, stats, errors),
    )


def test_a_grid_over_l2_optimises_the_targets_once_and_edits_as_a_fresh_run(
    trained_toy, tmp_path, monkeypatch
):
    q, model, runner, data = _errors(trained_toy)
    calls = []
    real = editors.LayerEditor.target_states
    monkeypatch.setattr(
        editors.LayerEditor,
        "target_states",
        lambda self, *a: calls.append(1) or real(self, *a),
    )
    shared = editors.StatsCache(tmp_path / "shared", {"checkpoint": "toy"})
    for l2 in (1.0, 10.0, 100.0):
        point = {**q, "L2": l2}
        reused = methods.get("alphaedit").build(point, layers=[1, 3], stats_cache=shared)
        fresh = methods.get("alphaedit").build(
            point, layers=[1, 3], stats_cache=editors.StatsCache(tmp_path / str(l2), {})
        )
        a, b = reused.edit(model, runner, data), fresh.edit(model, runner, data)
        for (name, w), w_fresh in zip(
            a.model.state_dict().items(), b.model.state_dict().values(), strict=True
        ):
            assert torch.equal(w, w_fresh), (l2, name)
    assert len(calls) == 1 + 3  # the shared cache's once, each fresh cache's once
    other = methods.get("alphaedit").build(
        {**q, "v_lr": q["v_lr"] * 2}, layers=[1, 3], stats_cache=shared
    )
    other.edit(model, runner, data)
    assert len(calls) == 5  # another v_lr: other targets


def test_a_grid_computes_the_preservation_keys_once_with_the_same_figures(
    trained_toy, tmp_path, monkeypatch
):
    q, model, runner, data = _errors(trained_toy)
    from vitedit.editors import layer

    calls = []
    real = layer.preservation_keys
    monkeypatch.setattr(layer, "preservation_keys", lambda *a: calls.append(1) or real(*a))
    shared = editors.StatsCache(tmp_path / "shared", {"checkpoint": "toy"})
    for l2 in (1.0, 10.0):
        point = {**q, "L2": l2}
        reused = methods.get("alphaedit").build(point, layers=[1, 3], stats_cache=shared)
        fresh = methods.get("alphaedit").build(point, layers=[1, 3], stats_cache=None)
        a, b = reused.edit(model, runner, data), fresh.edit(model, runner, data)
        pa = {k: v for k, v in a.info["layer_info"].items()}
        pb = {k: v for k, v in b.info["layer_info"].items()}
        for key in pa:
            figures = [s for s in pa[key] if s.startswith("preservation_")]
            assert figures, key
            assert {s: pa[key][s] for s in figures} == {s: pb[key][s] for s in figures}, (l2, key)
    # in-sample and held-out keys, once for both grid points (an editor without a cache computes
    # its own inside preservation_error, not counted here)
    assert len(calls) == 2


def test_the_render_check_compares_figures_not_how_they_were_had(tmp_path):
    from vitedit.sweep.inprocess import _metrics

    row = {"edit_fix_ratio": 0.5, "edit_time_seconds": 1.0, "reused_checkpoint": False}
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": {"baseline_retrain": row}}))
    fast = _metrics(tmp_path)
    row.update(edit_time_seconds=9.0, reused_checkpoint=True)  # the render reused the retrain
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": {"baseline_retrain": row}}))
    assert _metrics(tmp_path) == fast == {"baseline_retrain.edit_fix_ratio": "0.5"}
    row["edit_fix_ratio"] = 0.4  # a figure that differs is seen
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": {"baseline_retrain": row}}))
    assert _metrics(tmp_path) != fast
