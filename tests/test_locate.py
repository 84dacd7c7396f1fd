import numpy as np
import pandas as pd
import pytest
import torch

from vitedit import locate, models, params, selection
from vitedit.locate import LocateError, Restoration, tracing

from conftest import tiny_vit

LAYER_KEYS = ("edit_layers", "num_edit_layers", "no_astra_layers", "rank_kind", "rank_scope")


def choose(stats, n_layers, **given):
    """``locate.choose_edit_layers`` with the schema's defaults but ``given``."""
    d = params.defaults()
    return locate.choose_edit_layers(stats, n_layers, **{**{k: d[k] for k in LAYER_KEYS}, **given})


def runner_of(cfg, batch_size=256):
    return models.Runner(cfg, batch_size, "cpu")


@pytest.fixture(scope="module")
def tiny():
    m, cfg, img = tiny_vit(1)
    return m, cfg, models.preprocess(img, cfg)


def noise_for(m, a=6, std=1.0, seed=0):
    return locate.make_noise(a, (m.patch_embed.num_patches, m.embed_dim), std, seed)


def test_batched_tracer_equals_one_restoration_per_pass(tiny):
    m, _, x = tiny
    rs = locate.restorations(len(m.blocks), scopes=list(locate.SCOPES), window=3)
    noise = noise_for(m)
    fast = locate.trace_sample(m, x, rs, noise, max_rows=40)  # several passes, uneven chunks
    ref = locate.trace_reference(m, x, rs, noise)
    for key in ("clean", "corrupted", "restored"):
        assert (fast[key] - ref[key]).abs().max() <= 1e-5, key
    assert fast["restored"].shape == (len(rs), 3)


def test_restoring_the_final_cls_state_reproduces_the_clean_output(tiny):
    m, _, x = tiny
    last = Restoration((len(m.blocks) - 1,), "block", "cls")
    out = locate.trace_sample(m, x, [last], noise_for(m, std=5.0))
    assert torch.allclose(out["restored"][0], out["clean"], atol=1e-6)
    assert not torch.allclose(out["corrupted"], out["clean"], atol=1e-3)  # the noise did something


def test_restoring_nothing_is_the_corrupted_run_and_everything_the_clean_run(tiny):
    m, _, x = tiny
    noise = noise_for(m, std=3.0)
    everything = Restoration((0,), "block", "all")  # clean state after block 0 on every token
    attn_mlp_all = Restoration(tuple(range(len(m.blocks))), "mlp", "all")
    out = locate.trace_sample(m, x, [everything, attn_mlp_all], noise)
    assert torch.allclose(out["restored"][0], out["clean"], atol=1e-6)
    # a manual corrupted run (no restoration) equals the tracer's corrupted probabilities
    with tracing.hooks([(m.patch_embed, tracing._noise_hook(noise))]), torch.no_grad():
        manual = torch.softmax(m(x.expand(len(noise), -1, -1, -1)), -1).mean(0)
    assert torch.allclose(manual, out["corrupted"], atol=1e-6)


def test_noise_touches_patch_positions_only(tiny):
    m, _, x = tiny
    seen = {}
    with tracing.hooks([(m.patch_embed, tracing._noise_hook(noise_for(m, a=1)))]):
        h = m.blocks[0].register_forward_pre_hook(lambda mod, inp: seen.setdefault("in", inp[0]))
        with torch.no_grad():
            m(x)
        h.remove()
    with torch.no_grad():
        clean_tokens = m.norm_pre(m._pos_embed(m.patch_embed(x)))
    assert torch.equal(seen["in"][:, 0], clean_tokens[:, 0])  # CLS untouched
    assert not torch.allclose(seen["in"][:, 1:], clean_tokens[:, 1:])


def test_tracing_is_deterministic_for_a_seed(tiny):
    m, _, x = tiny
    rs = locate.restorations(len(m.blocks))
    a = locate.trace_sample(m, x, rs, noise_for(m, seed=3))
    b = locate.trace_sample(m, x, rs, noise_for(m, seed=3))
    c = locate.trace_sample(m, x, rs, noise_for(m, seed=4))
    assert torch.equal(a["restored"], b["restored"]) and not torch.equal(
        a["restored"], c["restored"]
    )


def test_windows_follow_rome():
    assert locate.window_layers(0, 3, 12) == (0, 1)
    assert locate.window_layers(5, 3, 12) == (4, 5, 6)
    assert locate.window_layers(11, 4, 12) == (9, 10, 11)
    rs = locate.restorations(12, ["block", "mlp"], ["all"], window=3)
    assert all(len(r.layers) == 1 for r in rs if r.kind == "block")
    assert [r.layers for r in rs if r.kind == "mlp"][5] == (4, 5, 6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: locate.restorations(4, ["mlps"]),
        lambda: locate.restorations(4, ["mlp"], ["token"]),
        lambda: choose(pd.DataFrame(), 12, edit_layers=[3, 12]),
        lambda: locate.check_choices([], [], 12, [-1]),
    ],
)
def test_invalid_kinds_scopes_and_layers_are_errors(call):
    with pytest.raises(LocateError):
        call()


def effects(te_by_sample):
    """A synthetic importance table: mlp layer 2 carries the effect, for samples with the given TE."""
    rows = []
    for s, te in enumerate(te_by_sample):
        for layer in range(4):
            ie = te * (0.8 if layer == 2 else 0.1 * layer)
            valid = abs(te) >= 0.05
            rows.append(
                {
                    "sample": s,
                    "official_index": s,
                    "true_label": 0,
                    "pred_label": 1,
                    "layer": layer,
                    "layers": str(layer),
                    "kind": "mlp",
                    "scope": "all",
                    "p_clean": 0.9,
                    "p_corrupted": 0.9 - te,
                    "p_restored": 0.9 - te + ie,
                    "ie": ie,
                    "te": te,
                    "te_valid": valid,
                    "norm_effect": ie / te if valid else np.nan,
                    "p_true_clean": 0.1,
                    "p_true_corrupted": 0.1,
                    "p_true_restored": 0.1,
                    "ie_true": 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_small_total_effects_are_counted_and_left_out():
    imp = effects([0.5, 0.4, 0.01])  # the third sample's TE is too small to normalise
    stats = locate.layer_statistics(imp)
    row = stats[(stats.layer == 2)].iloc[0]
    assert row.n_used == 2 and row.n_excluded == 1
    assert row["mean"] == pytest.approx(0.8)  # not polluted by a raw value of the third sample
    assert stats.sort_values("rank").layer.iloc[0] == 2


def test_layer_selection_priority():
    stats = locate.layer_statistics(effects([0.5, 0.4]))
    explicit = choose(stats, 4, edit_layers=[0, 1])
    assert (explicit["layers"], explicit["source"]) == ([0, 1], "explicit")
    traced = choose(stats, 4, num_edit_layers=2)
    assert traced["source"] == "tracing" and traced["layers"] == [2, 3]
    off = choose(stats, 4, no_astra_layers=True)
    assert (off["layers"], off["source"]) == ([1, 2, 3], "default")
    none = choose(locate.layer_statistics(pd.DataFrame()), 12)
    assert none["layers"] == [9, 10, 11] and none["source"] == "default"
    attn = choose(stats, 4, rank_kind="attn")  # no attn traced: falls back, says why
    assert attn["source"] == "default" and "attn" in attn["reason"]


def test_zero_errors_is_a_normal_outcome(tiny, tmp_path):
    m, cfg, _ = tiny
    y = np.array([0, 1, 2])
    positions = selection.select_errors(y, y.copy(), 50)
    assert positions.size == 0
    samples = locate.Traced(np.zeros((3, 28, 28, 3), np.uint8), y, y, positions)
    setup = locate.TraceSetup(locate.restorations(4), noise_for(m), 0.05, 2048)
    imp = locate.trace_errors(m, runner_of(cfg), samples, setup)
    assert imp.empty and list(imp.columns) == locate.IMPORTANCE_COLUMNS
    stats = locate.layer_statistics(imp)
    assert stats.empty and list(stats.columns) == locate.STATISTICS_COLUMNS
    choice = choose(stats, 4)
    summary = locate.summarize(
        imp,
        n_errors_total=0,
        n_set=3,
        noise_std=1.0,
        n_restorations=12,
        choice=choice,
        seconds=0.1,
        n_layers=4,
    )
    assert summary["n_errors"] == 0 and "nothing to edit" in summary["message"]
    locate.save_edit_layers(tmp_path, choice)
    assert locate.load_edit_layers(tmp_path)["layers"] == [1, 2, 3]


def test_select_errors_is_deterministic_and_capped():
    y = np.array([0, 1, 1, 0, 2, 2])
    p = np.array([1, 1, 0, 0, 0, 2])
    assert selection.select_errors(y, p, 2).tolist() == [0, 2]
    assert selection.select_errors(y, p, None).tolist() == [0, 2, 4]


def test_noise_scale_estimate_matches_a_direct_computation(tiny):
    m, cfg, _ = tiny
    imgs = np.random.default_rng(1).integers(0, 255, (10, 28, 28, 3), dtype=np.uint8)
    with torch.no_grad():
        direct = m.patch_embed(models.preprocess(imgs, cfg)).double().std(unbiased=False).item()
    assert locate.patch_embedding_std(m, runner_of(cfg, 3), imgs) == pytest.approx(direct, rel=1e-6)


def test_patch_attribution_finds_the_patch_that_matters():
    """A model whose score depends on one patch only: attribution must point at that patch."""
    m = models.build_model("vit_tiny_test", 2).eval()
    cfg = models.get_config("vit_tiny_test")

    class OnePatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = m.patch_embed

        def forward(self, x):  # logit of class 1 = mean of patch (1, 2) of channel 0
            v = x[:, 0, 7:14, 14:21].mean((1, 2))
            return torch.stack([torch.zeros_like(v), 4 * v], 1)

    img = np.full((28, 28, 3), 255, np.uint8)
    coef = locate.patch_attribution(
        OnePatch(), runner_of(cfg), img, 1, n_masks=64, keep_prob=0.5, alpha=1e-4, seed=0
    )
    assert coef.shape == (4, 4) and np.unravel_index(np.argmax(coef), coef.shape) == (1, 2)
    assert np.abs(np.delete(coef.ravel(), 1 * 4 + 2)).max() < 0.1 * coef.max()


def test_cls_only_last_block_matches_the_full_block(tiny):
    m, _, x = tiny
    assert tracing._cls_only_ok(m)
    with torch.no_grad():
        h = m.norm_pre(m._pos_embed(m.patch_embed(x.expand(3, -1, -1, -1)))) + torch.randn(
            3, 17, 32
        )
        full = m.blocks[-1](h)[:, :1]
        assert torch.allclose(locate.last_block_cls(m.blocks[-1], h), full, atol=1e-6)
        assert torch.allclose(
            locate.forward_from(m, h, 1, cls_only_last=True),
            locate.forward_from(m, h, 1),
            atol=1e-5,
        )


def test_corrupted_view_embeds_back_to_the_noise(tiny):
    """The pixel view's patch embedding differs from the clean one by the noise's projection."""
    m, cfg, _ = tiny
    img = np.random.default_rng(2).integers(
        60, 200, (28, 28, 3), dtype=np.uint8
    )  # no clamping at 0 or 1
    w = m.patch_embed.proj.weight.reshape(m.embed_dim, -1).double()
    pix = torch.randn(m.patch_embed.num_patches, w.shape[1], dtype=torch.float64) * 0.01
    noise = (pix @ w.T).float()  # a noise that lies in the range of the patch embedding
    view = locate.corrupted_view(m, runner_of(cfg), img, noise)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    x_view = (torch.from_numpy(view).permute(2, 0, 1)[None] - mean) / std
    with torch.no_grad():
        diff = m.patch_embed(x_view) - m.patch_embed(models.preprocess(img[None], cfg))
    assert view.shape == (28, 28, 3) and torch.allclose(diff[0], noise, atol=1e-4)
