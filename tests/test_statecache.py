"""The fast path's evaluation: an edited model run from the base model's cached hidden states gives
the probabilities of a full forward pass, bit for bit, whatever the edit changed."""

import copy

import numpy as np
import pytest
import torch

from vitedit import editors, methods, models, params, statecache

from conftest import tiny_vit


def _edited(model, where: str):
    m = copy.deepcopy(model)
    with torch.no_grad():
        if where == "head":
            m.head.weight.mul_(1.5)
        elif where == "norm":
            m.norm.weight.add_(0.1)
        elif where == "block2":
            w = m.blocks[2].mlp.fc2.weight
            w.add_(0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
        elif where == "blocks1and3":
            m.blocks[1].attn.proj.weight.mul_(0.9)
            m.blocks[3].mlp.fc1.bias.add_(0.05)
        elif where == "embedding":
            m.patch_embed.proj.weight.mul_(1.1)
    return m


@pytest.mark.parametrize(
    "where, block",
    [("head", 4), ("norm", 4), ("block2", 2), ("blocks1and3", 1), ("embedding", 0), ("none", 4)],
)
def test_the_first_changed_block_is_read_from_the_weights(where, block):
    model, _, _ = tiny_vit(0)
    assert statecache.first_changed_block(model, _edited(model, where)) == block


@pytest.mark.parametrize("where", ["block2", "blocks1and3"])
def test_an_edit_evaluated_from_the_cached_states_equals_a_full_forward_pass(where):
    model, cfg, imgs = tiny_vit(45)  # 45 images in batches of 16: a short last batch too
    runner = models.Runner(cfg, 16, "cpu")
    cache = statecache.StateCache(model, runner)
    edited = _edited(model, where)
    got = cache.probs(edited, imgs)
    want = runner.probs(edited, imgs).numpy()
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(cache.probs(edited, imgs), want)  # the same model again: kept result
    second = _edited(model, where)  # a second grid point at the same block: states reused
    with torch.no_grad():
        second.blocks[3].mlp.fc2.bias.add_(0.2)
    again = cache.probs(second, imgs)
    assert np.array_equal(again, runner.probs(second, imgs).numpy())
    assert not np.array_equal(again, want) and cache.hits == 1 and cache.misses == 1


def test_an_edit_of_the_embeddings_or_the_head_or_another_model_is_left_to_the_caller():
    model, cfg, imgs = tiny_vit(8)
    cache = statecache.StateCache(model, models.Runner(cfg, 16, "cpu"))
    for where in ("embedding", "head", "norm", "none"):
        assert cache.probs(_edited(model, where), imgs) is None, where
    other = models.build_model("vit_tiny_test", 5)
    assert cache.probs(other, imgs) is None


def test_a_registered_layer_editors_result_evaluates_exactly_from_the_cached_states(
    trained_toy, tmp_path
):
    """On a trained model's real activations: AlphaEdit's edit of two blocks (the lowest one's
    states reused)."""
    p, data, split, model = trained_toy
    runner = models.Runner(models.get_config("vit_tiny_test"), 32, "cpu")
    imgs, y = split.images(data, "edit_discovery"), split.labels(data, "edit_discovery")
    pred = runner.probs(model, imgs).numpy().argmax(1)
    errors = np.flatnonzero(pred != y)[:3]
    assert len(errors), "the toy model makes no Edit-Discovery error"
    stats = editors.stats_positions(len(split.indices["ft_train"]), 40, 0)
    data_in = editors.edit_data(data, split, stats, errors)
    q = {**params.defaults(), **p, "v_num_grad_steps": 5}
    ed = methods.get("alphaedit").build(
        q, layers=[1, 3], stats_cache=editors.StatsCache(tmp_path, {"checkpoint": "toy"})
    )
    res = ed.edit(model, runner, data_in)
    cache = statecache.StateCache(model, runner)
    test_imgs = split.images(data, "test")
    assert statecache.first_changed_block(model, res.model) == 1
    assert np.array_equal(
        cache.probs(res.model, test_imgs), runner.probs(res.model, test_imgs).numpy()
    )


def test_the_caching_runner_computes_a_models_features_once_and_returns_the_same_values():
    model, cfg, imgs = tiny_vit(20)
    plain, caching = models.Runner(cfg, 16, "cpu"), statecache.CachingRunner(cfg, 16, "cpu")
    want = plain.pre_logits(model, imgs)
    first = caching.pre_logits(model, imgs)
    first.mul_(0)  # a caller changing its copy changes nothing kept
    assert torch.equal(caching.pre_logits(_edited(model, "head"), imgs), want)  # head: same key
    assert len(caching.memo) == 1
    assert not torch.equal(caching.pre_logits(_edited(model, "block2"), imgs), want)
    assert len(caching.memo) == 2


def test_states_over_the_memory_cap_are_not_kept_and_the_caller_runs_the_model():
    model, cfg, imgs = tiny_vit(45)
    runner = models.Runner(cfg, 16, "cpu")
    per_image = (model.patch_embed.num_patches + 1) * model.embed_dim * 4
    cache = statecache.StateCache(model, runner, max_bytes=30 * per_image)
    edited = _edited(model, "block2")
    assert cache.probs(edited, imgs[:20]) is not None  # 20 images fit
    assert cache.probs(edited, imgs[20:]) is None  # 25 more would not: run whole by the caller
    assert cache.kept_bytes() == 20 * per_image and cache.over_cap == 1
    assert np.array_equal(cache.probs(edited, imgs[:20]), runner.probs(edited, imgs[:20]).numpy())
