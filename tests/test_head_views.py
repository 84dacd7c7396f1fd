"""head_closed_form_views (issue 30): the closed-form head edit with each error's key averaged over
views of its image; everything else is head_closed_form's."""

import numpy as np
import pytest
import torch

from vitedit import editors, models, params
from vitedit.editors import head_views
from vitedit.train import augment


def test_the_views_are_the_trainings_augmentations_made_deterministic():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    with_flips, without = head_views.image_views(rgb, True), head_views.image_views(grey, False)
    assert len(with_flips) == 10 and len(without) == 5  # image, 4 shifts (+ 2 flips, 3 turns)
    assert all(v.shape == rgb.shape for v in with_flips) and np.array_equal(with_flips[0], rgb)
    pad = 28 // 14
    assert np.array_equal(without[3][:, :, pad:], grey[:, :, :-pad])  # shifted right by 2 pixels
    assert np.array_equal(with_flips[5], rgb[:, :, ::-1])
    assert np.array_equal(with_flips[7], np.rot90(rgb, 1, axes=(1, 2)))
    # every view is one the training can draw (its shifts are reflected, by at most ``pad``)
    x = torch.as_tensor(grey[:, None].astype(np.float32))
    drawn = {
        augment(x, torch.Generator().manual_seed(s), flips=False).numpy().tobytes()
        for s in range(200)
    }
    assert all(v[:, None].astype(np.float32).tobytes() in drawn for v in without)


def _setup(trained_toy):
    from test_methods import _edit_set

    p0, data, split, model = trained_toy
    p = params.resolve({k: v for k, v in p0.items() if k in params.SCHEMA}, {})
    runner = models.Runner(models.get_config("vit_tiny_test"), 64, "cpu")
    return p, model, runner, _edit_set(data, split, model)


def test_the_keys_are_the_views_mean_and_the_edit_is_judged_on_the_errors_own_images(
    trained_toy, monkeypatch
):
    p, model, runner, es = _setup(trained_toy)
    ed = editors.build("head_closed_form_views", p, params=p)
    seen = {}
    solve = type(ed).solve

    def spy(self, theta0, feats, data):
        seen["keys"] = feats.error_keys
        return solve(self, theta0, feats, data)

    monkeypatch.setattr(type(ed), "solve", spy)
    res = ed.edit(model, runner, es)
    views = head_views.image_views(es.images, p["augment_flips"])
    mean = torch.stack([runner.pre_logits(model, v) for v in views]).mean(0)
    assert torch.allclose(seen["keys"][:, :-1], mean.double()) and len(views) == 10
    own = runner.probs(model, es.images)[torch.arange(2), es.targets]
    assert np.allclose(res.log.p_true_before, own.numpy(), atol=1e-6)
    after = runner.probs(res.model, es.images).argmax(1).numpy()
    assert list(res.log.fixed) == list(after == es.labels)


def test_with_the_image_as_its_only_view_it_is_head_closed_form(trained_toy, monkeypatch):
    """The ablation's identity: what differs from head_closed_form is the averaging alone."""
    p, model, runner, es = _setup(trained_toy)
    base = editors.build("head_closed_form", p).edit(model, runner, es).model.head.weight
    views = editors.build("head_closed_form_views", p, params=p).edit(model, runner, es)
    assert not torch.equal(views.model.head.weight, base)
    monkeypatch.setattr(head_views, "image_views", lambda x, flips: [np.asarray(x)])
    same = editors.build("head_closed_form_views", p, params=p).edit(model, runner, es)
    assert torch.equal(same.model.head.weight, base)


@pytest.mark.parametrize("flips", [True, False])
def test_the_datasets_flip_setting_decides_the_views(trained_toy, monkeypatch, flips):
    p, model, runner, es = _setup(trained_toy)
    got = []
    real = head_views.image_views
    monkeypatch.setattr(head_views, "image_views", lambda x, f: got.append(f) or real(x, f))
    q = dict(p, augment_flips=flips)
    editors.build("head_closed_form_views", q, params=q).edit(model, runner, es)
    assert got == [flips]


def test_it_searches_head_closed_forms_grid():
    from vitedit import methods

    base = methods.get("head_closed_form")
    for name in ("head_closed_form_views", "head_closed_form_each_view"):
        assert methods.get(name).grid == base.grid and methods.get(name).params == base.params


def test_each_view_is_a_key_of_its_own_at_the_errors_label(trained_toy, monkeypatch):
    """head_closed_form_each_view: the solve reads every view's features as a key, with the
    error's label; at one view it is head_closed_form."""
    p, model, runner, es = _setup(trained_toy)
    ed = editors.build("head_closed_form_each_view", p, params=p)
    seen = {}
    solve = head_views.HeadClosedFormEditor.solve

    def spy(self, theta0, feats, data):
        seen.update(keys=feats.error_keys, labels=data.labels, weight=self.head_error_weight)
        return solve(self, theta0, feats, data)

    monkeypatch.setattr(head_views.HeadClosedFormEditor, "solve", spy)
    res = ed.edit(model, runner, es)
    views = head_views.image_views(es.images, p["augment_flips"])
    each = torch.cat([runner.pre_logits(model, v) for v in views])
    assert torch.allclose(seen["keys"][:, :-1], each.double()) and len(each) == 10 * 2
    assert list(seen["labels"]) == list(es.labels) * 10
    assert seen["weight"] == pytest.approx(p["head_error_weight"] / 10)
    assert res.info["key_views"] == 10
    own = runner.probs(res.model, es.images).argmax(1).numpy()
    assert list(res.log.fixed) == list(own == es.labels)  # judged on the errors' own images
    monkeypatch.setattr(head_views, "image_views", lambda x, flips: [np.asarray(x)])
    one = editors.build("head_closed_form_each_view", p, params=p).edit(model, runner, es)
    base = editors.build("head_closed_form", p).edit(model, runner, es)
    assert torch.equal(one.model.head.weight, base.model.head.weight)
