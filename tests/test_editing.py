"""The editors (:mod:`vitedit.editors`): their solves on synthetic keys, and each editor on a
trained model's real activations. Editors are built through the registry (``editors.build``):
the schema gives every setting a test does not name."""

import numpy as np
import pandas as pd
import pytest
import torch

from vitedit import checkpoints, editors, methods, models
from vitedit.editors import EditData, records, solve, statistics
from vitedit.editors.head import HeadFeatures
from vitedit.editors.head_gradient import fisher_diagonal

from conftest import tiny_vit

RUNNER = models.Runner(models.get_config("vit_tiny_test"), 256, "cpu")


def build(name, **given):
    """The registered method's editor with the schema's settings but ``given`` (statistics not
    cached)."""
    if methods.get(name).uses_layers:
        given.setdefault("stats_cache", None)
    return editors.build(name, **given)


def low_rank_keys(d=24, rank=6, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, rank, generator=g, dtype=torch.float64)
    return basis @ torch.randn(
        rank, n, generator=g, dtype=torch.float64
    )  # (d, n) in a rank-6 subspace


def test_projection_is_symmetric_idempotent_and_spans_the_null_space():
    k0 = low_rank_keys()
    moment = k0 @ k0.T / k0.shape[1]
    p, info = solve.null_space_projection(moment, threshold=1e-8, rule="absolute")
    assert info["kept_dim"] == 24 - 6
    assert torch.allclose(p, p.T, atol=1e-12) and torch.allclose(p @ p, p, atol=1e-10)
    assert (p @ k0).abs().max() < 1e-8 * k0.abs().max()  # annihilates the preserved keys


def test_relative_null_space_keeps_the_bottom_energy():
    ev = torch.tensor([1e-3, 1e-2, 0.1, 1.0, 10.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    moment = q @ torch.diag(ev) @ q.T
    _, info = solve.null_space_projection(moment, 0.02, rule="energy")
    assert info["kept_dim"] == 3  # 0.111 / 11.111 = 1% of the energy; adding 1.0 would exceed 2%


def test_alphaedit_update_leaves_preserved_keys_alone():
    torch.manual_seed(0)
    d, out = 24, 10
    k0 = low_rank_keys(d)
    p, _ = solve.null_space_projection(k0 @ k0.T / k0.shape[1], 1e-8, rule="absolute")
    w = torch.randn(out, d, dtype=torch.float64)
    keys = torch.randn(d, 5, dtype=torch.float64)  # new keys, partly outside the preserved span
    resid = torch.randn(out, 5, dtype=torch.float64)
    l2 = 1e-6
    dw = solve.alphaedit_update(resid, keys, p, L2=l2)
    ratio = (dw @ k0).norm(dim=0) / (w @ k0).norm(dim=0)
    assert ratio.max() <= 1e-3
    # it is the solution, not a step toward it: ΔW = ΔW P, and the gradient of
    # ||ΔW K - R||² + L2 ||ΔW||² vanishes inside the editable subspace (range of P)
    assert (dw - dw @ p).norm() <= 1e-6 * dw.norm()  # float64, L2 = 1e-6: conditioning
    grad = (dw @ keys - resid) @ keys.T @ p + l2 * dw
    assert grad.norm() <= 1e-6 * (resid @ keys.T).norm()  # a half step leaves ~0.5
    assert (dw @ keys - resid).norm() < 0.9 * resid.norm()  # the keys' editable part is used


def test_the_p_equals_i_solve_with_tiny_l2_reaches_the_targets():
    """The ablation's solve (alphaedit_noproj: P = I, a ridge, no C0): exact when n <= d."""
    torch.manual_seed(1)
    keys = torch.randn(24, 5, dtype=torch.float64)
    resid = torch.randn(10, 5, dtype=torch.float64)
    dw = solve.alphaedit_update(resid, keys, torch.eye(24, dtype=torch.float64), L2=1e-10)
    assert torch.allclose(dw @ keys, resid, atol=1e-6)


def test_memits_solve_is_covariance_weighted_least_squares():
    """MEMIT: ΔW = R Kᵀ (K Kᵀ + λ C0)⁻¹ (no projection, no ridge); a large λ keeps the preserved
    keys' outputs where they were, a small one reaches the targets."""
    torch.manual_seed(5)
    k0 = torch.randn(24, 400, dtype=torch.float64)  # preserved keys spanning every direction
    c0 = k0 @ k0.T / k0.shape[1]
    keys, resid = torch.randn(24, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    eye = torch.eye(24, dtype=torch.float64)
    for lam in (1e-3, 1e3):
        dw = solve.alphaedit_update(resid, keys, eye, L2=0.0, preserved=lam * c0)
        want = resid @ keys.T @ torch.linalg.inv(keys @ keys.T + lam * c0)
        assert torch.allclose(dw, want, atol=1e-8)
    small = solve.alphaedit_update(resid, keys, eye, L2=0.0, preserved=1e-6 * c0)
    large = solve.alphaedit_update(resid, keys, eye, L2=0.0, preserved=1e3 * c0)
    assert torch.allclose(small @ keys, resid, atol=1e-4)  # λ -> 0: the targets are reached
    assert (large @ k0).norm() < 0.05 * (small @ k0).norm()  # λ large: preserved outputs stay


def test_sequential_batches_protect_earlier_edits():
    torch.manual_seed(2)
    eye = torch.eye(24, dtype=torch.float64)
    k1, r1 = torch.randn(24, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    k2, r2 = torch.randn(24, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    dw1 = solve.alphaedit_update(r1, k1, eye, L2=1e-8)
    dw2 = solve.alphaedit_update(r2, k2, eye, prev_cov=k1 @ k1.T, L2=1e-8)
    assert (dw2 @ k1).norm() < 1e-3 * (
        dw1 @ k1
    ).norm()  # the second batch barely moves the first's keys


def test_streamed_second_moment_matches_a_direct_computation(toy_model):
    m, cfg, imgs = toy_model
    grab = []
    h = m.blocks[1].mlp.fc2.register_forward_pre_hook(lambda mod, a: grab.append(a[0].double()))
    with torch.no_grad():
        m(models.preprocess(imgs, cfg))
    h.remove()
    k = grab[0]
    direct_cls = k[:, 0].T @ k[:, 0] / len(imgs)
    direct_all = (
        k.reshape(-1, k.shape[-1]).T @ k.reshape(-1, k.shape[-1]) / (k.shape[0] * k.shape[1])
    )
    for scope, want in (
        ("cls", direct_cls),
        ("all", direct_all),
        ("cls+all", direct_cls + direct_all),
    ):
        runner = models.Runner(cfg, 7, "cpu")
        got, n = statistics.key_second_moment(m, runner, imgs, (1, "mlp"), scope)
        assert n == len(imgs) and torch.allclose(got, want, atol=1e-10), scope


def test_statistics_are_cached_per_checkpoint_and_samples(tmp_path, toy_model):
    m, cfg, imgs = toy_model
    runner = models.Runner(cfg, 256, "cpu")

    def moment(key):
        cache = statistics.StatsCache(tmp_path, key)
        return statistics.cached_second_moment(m, runner, imgs, (1, "mlp"), "cls", cache)

    a, cached_a = moment({"ckpt": "x", "pos": [1]})
    b, cached_b = moment({"ckpt": "x", "pos": [1]})
    _, cached_c = moment({"ckpt": "y", "pos": [1]})
    assert (cached_a, cached_b, cached_c) == (False, True, False) and torch.equal(a, b)
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.fixture(scope="module")
def toy_model():
    return tiny_vit(20)


@pytest.fixture(scope="module")
def trained(trained_toy):
    """The shared tiny trained model and its errors on the toy Test set."""
    _, data, split, model = trained_toy
    cfg = models.get_config("vit_tiny_test")
    imgs, labels = data.images["test"], data.labels["test"]
    pred = models.predict_logits(model, imgs, cfg).argmax(1).numpy()
    wrong = np.flatnonzero(pred != labels)
    ft = split.images(data, "ft_train")
    return model, RUNNER, ft, imgs, labels, wrong


def edit_set(ft, imgs, labels, positions, anchors=True):
    """60 FT-Train statistics samples, the errors at ``positions`` and (head_anchored's) 20 other
    images as anchors."""
    rest = np.setdiff1d(np.arange(len(labels)), positions)[:20] if anchors else None
    return EditData(
        ft[:60],
        np.arange(60),
        imgs[positions],
        labels[positions],
        np.asarray(positions),
        anchor_images=imgs[rest] if anchors else None,
        anchor_positions=rest,
        anchor_labels=labels[rest] if anchors else None,
    )


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("null_space", [True, False])
def test_an_edit_flips_a_chosen_error_and_leaves_the_input_model_alone(trained, null_space):
    model, cfg, ft, imgs, labels, wrong = trained
    assert len(wrong) > 0, "the toy model should make some mistakes"
    before = snapshot(model)
    strong = dict(  # strong settings (absolute rules, the original's target) to flip one error
        layers=[2, 3],
        L2=1e-3,
        L2_rule="absolute",
        clamp_norm_factor=4.0,
        v_weight_decay=1e-3,
        v_num_grad_steps=40,
    )
    if null_space:
        ed = build("alphaedit", **strong, nullspace_threshold=1e-3, nullspace_rule="absolute")
    else:
        ed = build("alphaedit_noproj", **strong)
    res = ed.edit(model, cfg, edit_set(ft, imgs, labels, wrong[:1]))
    assert same(before, snapshot(model))  # the input model is untouched
    assert bool(res.log.fixed.iloc[0]) and res.log.pred_after.iloc[0] == labels[wrong[0]]
    assert list(res.log.columns[:9]) == editors.LOG_COLUMNS and "update_norm_L2.mlp" in res.log
    assert res.info["method"] == ("alphaedit" if null_space else "alphaedit_noproj")
    changed = {k for k, v in res.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"blocks.2.mlp.fc2.weight", "blocks.3.mlp.fc2.weight"}
    kept = res.info["layer_info"]["L2.mlp"]["kept_dim"]
    assert (kept < 64) if null_space else (kept == 64)


def test_attention_projection_can_be_edited_too(trained):
    model, cfg, ft, imgs, labels, wrong = trained
    acting = dict(nullspace_threshold=1e-2, L2=1.0)  # a null space at both modules
    res = build("alphaedit", layers=[3], edit_modules=["mlp", "attn"], **acting).edit(
        model, cfg, edit_set(ft, imgs, labels, wrong[:2])
    )
    changed = {
        k for k, v in res.model.state_dict().items() if not torch.equal(v, model.state_dict()[k])
    }
    assert changed == {"blocks.3.mlp.fc2.weight", "blocks.3.attn.proj.weight"}


@pytest.mark.parametrize("name", methods.names(baselines=False))
def test_editing_zero_errors_returns_the_model_unchanged(trained, name):
    """Every registered editor, given no error, returns the model as it was and says so."""
    model, cfg, ft, imgs, labels, _ = trained
    editor = build(name, layers=[1, 2]) if methods.get(name).uses_layers else build(name)
    res = editor.edit(model, cfg, edit_set(ft, imgs, labels, np.array([], dtype=int)))
    assert (
        same(snapshot(model), snapshot(res.model))
        and res.log.empty
        and "no errors" in res.info["message"]
    )


@pytest.mark.parametrize("name", ["head", "head_closed_form"])
def test_head_editing_leaves_the_backbone_bit_identical(trained, name):
    model, cfg, ft, imgs, labels, wrong = trained
    weak = {  # weakly regularised
        "head": dict(head_steps=100, head_lr=0.05, ewc_lambda=1.0),
        "head_closed_form": dict(head_error_weight=50.0, head_margin=2.0),
    }
    ed = build(name, **weak[name])
    res = ed.edit(model, cfg, edit_set(ft, imgs, labels, wrong[:3]))
    before, after = snapshot(model), snapshot(res.model)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert res.log.fixed.mean() > 0.5  # weakly regularised: most errors fixed


def test_fisher_diagonal_matches_brute_force():
    torch.manual_seed(3)
    head = torch.nn.Linear(6, 4)
    feats = torch.randn(30, 6)
    fw, fb = fisher_diagonal(head.weight.detach(), head.bias.detach(), feats)
    bw, bb = torch.zeros_like(head.weight), torch.zeros_like(head.bias)
    for (
        f
    ) in feats:  # E_x E_{y ~ p(y|x)} [grad log p(y|x)^2], per sample, expectation over y exactly
        p = torch.softmax(head(f), -1).detach()
        for y in range(4):
            head.zero_grad()
            torch.log_softmax(head(f), -1)[y].backward()
            bw += p[y] * head.weight.grad**2
            bb += p[y] * head.bias.grad**2
    assert torch.allclose(fw, bw / 30, atol=1e-6) and torch.allclose(fb, bb / 30, atol=1e-6)
    assert (fw > 0).all() and (fb > 0).all()


def test_closed_form_keeps_ft_train_logits_when_errors_weigh_nothing():
    torch.manual_seed(4)
    theta0 = torch.randn(3, 6, dtype=torch.float64)  # [W b]
    feats = HeadFeatures(torch.randn(40, 5), torch.randn(4, 5))
    y = np.array([0, 1, 2, 0])
    data = EditData(None, None, None, y, np.arange(4))
    ed = build("head_closed_form", ridge_lambda=1e-6, head_error_weight=1e-9)
    theta = ed.solve(theta0, feats, data).theta
    xs, xe = feats.stats_keys, feats.error_keys
    assert torch.allclose(xs @ theta.T, xs @ theta0.T, atol=1e-4)
    strong = build("head_closed_form", ridge_lambda=1e-6, head_error_weight=1e6, head_margin=1.0)
    theta = strong.solve(theta0, feats, data).theta
    assert ((xe @ theta.T).argmax(1) == torch.as_tensor(y)).all()


def test_stats_positions_are_seeded_and_always_leave_a_held_out_share():
    a = editors.stats_positions(100, 30, 0)
    assert len(a) == 30 and np.array_equal(a, editors.stats_positions(100, 30, 0))
    assert not np.array_equal(a, editors.stats_positions(100, 30, 1))
    # 'all' and more samples than FT-Train holds: every sample but the held-out minimum (20 %)
    for samples in ("all", 500, 81):
        pos = editors.stats_positions(100, samples, 0)
        assert len(pos) == 80 and len(np.unique(pos)) == 80, samples
    assert len(editors.stats_positions(3, "all", 0)) == 2  # at least one sample held out


def test_edited_checkpoint_is_recorded_in_the_run_and_reloads(tmp_path, trained):
    model, cfg, ft, imgs, labels, wrong = trained
    res = build("head_closed_form").edit(model, cfg, edit_set(ft, imgs, labels, wrong[:2]))
    base = tmp_path / "base.pt"
    torch.save({"x": 1}, base)
    rec = records.record(
        tmp_path,
        res,
        {"path": str(base), "sha256": checkpoints.sha256_file(base)},
        {"a": 1},
        edit_set(ft, imgs, labels, wrong[:2]),
    )
    assert rec["checkpoint"].startswith(str(tmp_path / "edited")) and rec[
        "stats_positions"
    ] == list(range(60))
    assert (tmp_path / "edits" / "head_closed_form.json").is_file()
    other = records.record(
        tmp_path,
        res,
        {"path": str(base), "sha256": "0" * 64},
        {"a": 1},
        edit_set(ft, imgs, labels, wrong[:2]),
    )
    assert other["checkpoint"] != rec["checkpoint"]  # another base model never overwrites this one


def test_head_nullspace_changes_only_the_null_space_part_of_real_keys(trained):
    """The invariant on a trained model's real activations: the head's update acts on a key only
    through its component in the null space of the preserved keys (ΔΘ (I − P) k = 0), so a
    preserved key's logits move by at most what its (small) null-space part allows."""
    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:4])
    res = build("head_nullspace", head_nullspace_threshold=1e-2, head_L2=1e-2).edit(
        model, runner, data
    )
    before, after = snapshot(model), snapshot(res.model)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    x = torch.cat([runner.pre_logits(model, data.stats_images), torch.ones(60, 1)], 1).double()
    proj, info = solve.null_space_projection(x.T @ x / len(x), 1e-2, "relative")
    delta = torch.cat(
        [
            after["head.weight"] - before["head.weight"],
            (after["head.bias"] - before["head.bias"])[:, None],
        ],
        1,
    ).double()
    assert delta.norm() > 0 and info["kept_dim"] == res.info["kept_dim"]
    leak = (delta @ (torch.eye(len(proj), dtype=torch.float64) - proj) @ x.T).norm()
    assert leak <= 1e-4 * (delta @ x.T).norm() + 1e-6  # float32 weights: ~1e-7 relative
    assert 0 <= res.info["preserved_key_energy_outside"] < 0.05  # below the threshold's share
    assert 0 <= res.info["error_key_energy_outside"] <= 1


def test_head_features_are_what_the_evaluation_reads(trained):
    """A head editor solves on the features the evaluation's cached path applies the head to: the
    same batches, no autograd graph, and the model's train/eval mode left as it was."""
    from vitedit import models

    model, runner, ft, imgs, labels, wrong = trained
    model.train()
    f = models.Runner(runner.cfg, 32, "cpu").pre_logits(model, imgs[:70])
    assert model.training and not f.requires_grad and f.dtype == torch.float32
    assert torch.equal(
        models.head_logits(model, f, 32), models.predict_logits(model, imgs[:70], runner.cfg, 32)
    )
    model.eval()


@pytest.mark.parametrize(
    "name", [n for n in methods.names(baselines=False) if not methods.get(n).uses_layers]
)
def test_a_head_edits_log_reads_the_head_on_features_as_a_full_forward_pass_would(trained, name):
    """The head editors judge their errors before and after through the head alone, on the cached
    features (the body is unchanged): the same probabilities as the full forward pass, bit for bit,
    so the log's fixed/not fixed is what the evaluation of the saved model finds."""
    from vitedit.editors.head import head_probs

    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:6])
    res = build(name).edit(model, runner, data)
    for m in (model, res.model):
        assert torch.equal(
            head_probs(m, runner, runner.pre_logits(m, data.images)), runner.probs(m, data.images)
        )
    after = runner.probs(res.model, data.images).argmax(1).numpy()
    assert (res.log["fixed"].to_numpy() == (after == data.labels)).all()


def test_head_nullspace_verify_loop_meets_its_prediction_change_budget(trained):
    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:4])
    loose = dict(head_nullspace_threshold=0.9, head_L2=1e-4, head_margin=5.0)  # a strong edit
    free = build("head_nullspace", **loose, head_verify_budget=0.0).edit(model, runner, data)
    kept = build("head_nullspace", **loose, head_verify_budget=0.02).edit(model, runner, data)
    f = runner.pre_logits(model, data.stats_images)

    def changed(m):
        return float((m.head(f).argmax(1) != model.head(f).argmax(1)).float().mean())

    assert changed(free.model) > 0.02  # unchecked, the strong edit moves many predictions
    assert changed(kept.model) <= 0.02 and kept.info["scale"] < 1


def two_class_geometry():
    """(preserved keys x, head theta0, error keys xe, their labels y) of a two-class head: the
    preserved keys [f0, f1, 1] are split by f0 and barely use f1; four errors are reachable along
    f1 and one (index 2) sits inside class 0's preserved samples."""
    g = torch.Generator().manual_seed(0)
    f0 = torch.cat([torch.full((100,), -1.0), torch.full((100,), 1.0)]) + 0.3 * torch.randn(
        200, generator=g
    )
    x = torch.stack([f0, 0.05 * torch.randn(200, generator=g), torch.ones(200)], 1).double()
    theta0 = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    xe = torch.tensor(
        [[-0.8, 3.0, 1], [-0.8, 2.9, 1], [-1.0, 0.0, 1], [-0.8, 3.1, 1], [-0.8, 3.05, 1]],
        dtype=torch.float64,
    )
    return x, theta0, xe, torch.ones(5, dtype=torch.long)


def test_per_sample_backoff_gives_up_the_error_that_would_move_preserved_decisions():
    x, theta0, xe, y = two_class_geometry()
    logits = xe @ theta0.T
    target = solve.margin_targets(logits, y, 1.0)
    eye = torch.eye(3, dtype=torch.float64)

    def solve_rows(rows):
        if not len(rows):
            return torch.zeros_like(theta0)
        r = torch.as_tensor(rows)
        return solve.alphaedit_update((target[r] - logits[r]).T, xe[r].T, eye, L2=1e-3)

    def fixed(delta, scale):
        return (xe @ (theta0 + scale * delta).T).argmax(1) == y

    ed = build("head_nullspace", head_verify_budget=0.05, head_verify_backoff="sample")
    full = solve_rows(np.arange(5))
    assert ed._changed(theta0, full, x) > 0.05  # fixing all five flips many class-0 samples
    scale_only = ed._verify(theta0, full, x)
    assert fixed(full, scale_only).sum() == 0  # scaled back to the budget, it fixes none
    kept, delta, scale = ed._backoff(theta0, x, xe, y, np.arange(5), full, solve_rows)
    assert list(kept) == [0, 1, 3, 4]  # exactly the harmful error is given up
    assert ed._changed(theta0, delta, x, scale) <= 0.05
    assert fixed(delta, scale)[[0, 1, 3, 4]].all()  # the others are fixed


def test_head_nullspace_per_sample_backoff_meets_the_budget_on_a_trained_model(trained):
    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:6])
    loose = dict(head_nullspace_threshold=0.9, head_L2=1e-4, head_margin=5.0)  # a strong edit
    f = runner.pre_logits(model, data.stats_images)

    def changed(m):
        return float((m.head(f).argmax(1) != model.head(f).argmax(1)).float().mean())

    def n_fixed(res):
        return int(res.log["fixed"].sum())

    free = build("head_nullspace", **loose, head_verify_budget=0.0).edit(model, runner, data)
    assert changed(free.model) > 0.02 and free.info["dropped_errors"] == 0
    scaled = build("head_nullspace", **loose, head_verify_budget=0.02).edit(model, runner, data)
    res = build(
        "head_nullspace", **loose, head_verify_budget=0.02, head_verify_backoff="sample"
    ).edit(model, runner, data)
    assert changed(res.model) <= 0.02 and res.info["verify_backoff"] == "sample"
    assert len(res.info["dropped_positions"]) == res.info["dropped_errors"]
    assert set(res.info["dropped_positions"]) <= set(np.asarray(data.positions).tolist())
    assert n_fixed(res) >= n_fixed(scaled)  # the scaled full set is on its path
    with pytest.raises(ValueError, match="head_verify_backoff"):
        build("head_nullspace", head_verify_backoff="halve")


def test_head_nullspace_verify_holdout_keeps_its_samples_out_of_the_null_space(trained):
    keys = torch.randn(40, 5, dtype=torch.float64)
    ed = build("head_nullspace", head_verify_budget=0.01, head_verify_holdout=0.25)
    built, verify = ed._split_statistics(keys)
    assert (len(built), len(verify)) == (30, 10)
    rows = {tuple(r.tolist()) for r in keys}
    b, v = {tuple(r.tolist()) for r in built}, {tuple(r.tolist()) for r in verify}
    assert not b & v and b | v == rows  # disjoint, and every statistics sample on one side
    again = ed._split_statistics(keys)
    assert torch.equal(again[0], built) and torch.equal(again[1], verify)  # deterministic
    same = build("head_nullspace", head_verify_budget=0.01)._split_statistics(keys)
    assert same[0] is keys and same[1] is keys  # 0: in-sample, as before
    off = build(
        "head_nullspace", head_verify_budget=0.0, head_verify_holdout=0.5
    )._split_statistics(keys)
    assert off[0] is keys  # no verify loop: P keeps every sample

    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:4])
    loose = dict(head_nullspace_threshold=0.9, head_L2=1e-4, head_margin=5.0)
    res = build("head_nullspace", **loose, head_verify_budget=0.05, head_verify_holdout=0.5).edit(
        model, runner, data
    )
    n = len(data.stats_images)
    assert res.info["verify_samples"] == round(0.5 * n) and not res.info["verify_in_sample"]
    f = runner.pre_logits(model, data.stats_images)
    _, fv = build(
        "head_nullspace", head_verify_budget=0.05, head_verify_holdout=0.5
    )._split_statistics(f)
    moved = (res.model.head(fv).argmax(1) != model.head(fv).argmax(1)).float().mean()
    assert moved <= 0.05 + 1e-9  # the budget holds on the samples kept out of P


def test_the_weight_ridge_ablation_is_the_pull_with_isotropic_statistics():
    """head_guarded_weight_ridge replaces the logit pull n_e·pull·mean‖ΔΘx‖² = n_e·pull·tr(ΔΘ C0 ΔΘᵀ)
    by n_e·ridge·tr(C0)/(d+1)·‖ΔΘ‖²: the same solve exactly when C0 is isotropic, another one when
    the keys have a preferred direction."""
    torch.manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(60, 6, dtype=torch.float64))
    x = q * 60**0.5  # C0 = xᵀx / 60 = I
    theta0 = torch.randn(3, 6, dtype=torch.float64)
    xe, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    kw = dict(head_margin=1.0, head_keep_margin=0.5, head_keep_weight=1.0)
    pulled, _ = build("head_guarded", head_keep_pull=10.0, **kw).optimise(theta0, x, xe, y)
    ridge = build("head_guarded_weight_ridge", head_weight_ridge=10.0, **kw)
    assert ridge.head_keep_pull == 0.0
    ridged, _ = ridge.optimise(theta0, x, xe, y)
    assert torch.allclose(pulled, ridged, atol=1e-6)
    stretched = x * torch.tensor([5.0, 1, 1, 1, 1, 1], dtype=torch.float64)  # one strong direction
    pulled, _ = build("head_guarded", head_keep_pull=10.0, **kw).optimise(theta0, stretched, xe, y)
    ridged, _ = ridge.optimise(theta0, stretched, xe, y)
    assert (pulled - ridged).norm() > 1e-2 * (pulled - theta0).norm()


def test_guarded_head_edit_fixes_what_it_can_without_flipping_guarded_decisions():
    """On the two-class geometry of the back-off test: four errors reachable along f1 and one
    inside class 0's preserved samples. The guarded edit fixes the four, gives up the fifth, and
    keeps every preserved decision; a ridge pull toward the old logits (head_closed_form's rule)
    would have to trade them off."""
    x, theta0, xe, y = two_class_geometry()
    theta, info = build(
        "head_guarded",  # the guard alone (no pull)
        head_margin=1.0,
        head_keep_margin=0.5,
        head_keep_weight=10.0,
        head_keep_pull=0.0,
    ).optimise(theta0, x, xe, y)
    fixed = ((xe @ theta.T).argmax(1) == y).tolist()
    assert fixed == [True, True, False, True, True]
    assert info["stats_changed"] == 0.0 and info["errors_fixed_in_solve"] == 0.8
    assert info["solver_converged"] and info["solver_grad_norm"] < 1e-4
    # the preserved samples keep their decisions, nearly all with the asked margin (a soft guard:
    # the given-up error still pulls at the few class-0 samples nearest to it)
    z0, z = x @ theta0.T, x @ theta.T
    pred = z0.argmax(1)
    m0 = (z0[:, 1] - z0[:, 0]).abs()
    m = torch.where(pred == 1, z[:, 1] - z[:, 0], z[:, 0] - z[:, 1])
    assert (m > 0).all() and float((m < torch.clamp(m0, max=0.5) - 0.05).double().mean()) < 0.05
    # with no weight on the guard, the fifth error is fixed too, at the cost of class-0 samples
    loose, info = build(
        "head_guarded", head_margin=1.0, head_keep_weight=0.0, head_keep_pull=0.0
    ).optimise(theta0, x, xe, y)
    assert ((xe @ loose.T).argmax(1) == y).all() and info["stats_changed"] > 0.05
    # the pull keeps the update small in the statistics samples' directions: the four reachable
    # errors are fixed along f1 (which the samples barely use), the costly fifth is not
    pulled, info = build(
        "head_guarded", head_margin=1.0, head_keep_weight=1e-6, head_keep_pull=10.0
    ).optimise(theta0, x, xe, y)
    assert ((xe @ pulled.T).argmax(1) == y).tolist() == [True, True, False, True, True]
    assert info["stats_changed"] < 0.05
    # nothing to fix: the head stays as it was (a sample is never asked for more margin than it
    # had, so the guard is already satisfied at the original head)
    still, info = build("head_guarded", head_margin=0.5, head_keep_margin=5.0).optimise(
        theta0, x, xe[:1], torch.zeros(1, dtype=torch.long)
    )
    assert torch.allclose(still, theta0, atol=1e-8) and info["final_loss"] < 1e-12


def test_guarded_head_edit_on_a_trained_model_is_deterministic_and_leaves_the_input_alone(trained):
    model, runner, ft, imgs, labels, wrong = trained
    data = edit_set(ft, imgs, labels, wrong[:6])
    before = snapshot(model)
    ed = build("head_guarded", head_margin=1.0, head_keep_margin=0.5, head_keep_weight=10.0)
    a, b = ed.edit(model, runner, data), ed.edit(model, runner, data)
    assert same(before, snapshot(model))
    assert same(snapshot(a.model), snapshot(b.model))
    body = {k: v for k, v in snapshot(a.model).items() if not k.startswith("head.")}
    assert same(body, {k: v for k, v in before.items() if not k.startswith("head.")})
    f = runner.pre_logits(model, data.stats_images)
    moved = float((a.model.head(f).argmax(1) != model.head(f).argmax(1)).float().mean())
    assert moved == pytest.approx(a.info["stats_changed"]) and moved <= 0.05
    assert a.info["errors_fixed_in_solve"] == pytest.approx(float(a.log["fixed"].mean()))


def test_guarded_head_edit_that_can_fix_nothing_leaves_the_head_unchanged_and_says_why():
    """Issue 28: on the tiny model head_guarded wrote a head update 8-155x the head's norm that
    fixed none of its errors (the solve's compromise drifting where nothing penalises it). When the
    solve fixes no error, the head stays as it was and the record says why and which knobs trade."""
    x, theta0, xe, y = two_class_geometry()
    ed = build(
        "head_guarded",
        head_margin=1.0,
        head_keep_margin=0.5,
        head_keep_weight=10.0,
        head_keep_pull=0.0,
    )
    _, info = ed.optimise(theta0, x, xe[2:3], y[2:3])
    assert info["errors_fixed_in_solve"] == 0.0  # the error inside class 0's guarded samples
    step = ed.solve(theta0, HeadFeatures(x[:, :2], xe[2:3, :2]), _labels(y[2:3]))
    assert torch.equal(step.theta, theta0) and float(step.delta.abs().max()) == 0.0
    assert "left unchanged" in step.info["message"] and "head_keep_weight" in step.info["message"]
    assert step.info["refused_update_norm"] > 0
    # an edit that fixes some errors is written as before
    reach = ed.solve(theta0, HeadFeatures(x[:, :2], xe[:, :2]), _labels(y))
    assert reach.info["errors_fixed_in_solve"] == 0.8 and float(reach.delta.abs().max()) > 0


def _labels(y) -> EditData:
    """An EditData holding only the errors' labels (what a head solve reads of it)."""
    none = np.zeros(0)
    return EditData(none, none, none, y.numpy(), none)


def test_the_anchored_head_keeps_its_anchors_and_is_the_closed_form_without_them():
    """head_anchored (issue 30) keeps the correctly classified Edit-Discovery samples' logits: at
    anchor_weight 0 it is head_closed_form bit for bit; heavily anchored, the anchors' logits move
    less than the closed form moves them."""
    torch.manual_seed(5)
    theta0 = torch.randn(3, 6, dtype=torch.float64)
    feats = HeadFeatures(torch.randn(40, 5), torch.randn(4, 5), torch.randn(30, 5))
    y = np.array([0, 1, 2, 0])
    data = EditData(None, None, None, y, np.arange(4))
    common = dict(ridge_lambda=1e-3, head_error_weight=10.0, head_margin=1.0)
    plain = build("head_closed_form", **common).solve(theta0, feats, data).theta
    zero = build("head_anchored", anchor_weight=0.0, **common).solve(theta0, feats, data).theta
    assert torch.equal(plain, zero)
    heavy = build("head_anchored", anchor_weight=100.0, **common).solve(theta0, feats, data).theta
    xa = feats.anchor_keys

    def moved(theta):
        return float((xa @ theta.T - xa @ theta0.T).norm())

    assert moved(heavy) < 0.5 * moved(plain)


def test_the_anchored_head_needs_its_anchors_and_says_how_to_give_them(trained):
    model, cfg, ft, imgs, labels, wrong = trained
    with pytest.raises(editors.EditError, match="anchor_positions"):
        build("head_anchored").edit(model, cfg, edit_set(ft, imgs, labels, wrong[:2], False))
    res = build("head_anchored").edit(model, cfg, edit_set(ft, imgs, labels, wrong[:2]))
    assert res.info["anchors"] == 20 and res.log.shape[0] == 2


def test_the_refit_head_fits_the_held_out_samples_and_its_ridge_holds_it_back():
    """head_refit (issue 30): cross-entropy on the errors and the anchors at the model's own
    decisions. A bias that misclassifies part of a linearly separable set is undone with a weak
    ridge; a huge ridge leaves the head where it was."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    f = torch.randn(300, 5, generator=g)
    truth = (f.double() @ w.T).argmax(1)
    theta0 = torch.cat([w, torch.tensor([[0.0], [0.0], [1.5]], dtype=torch.float64)], 1)
    pred0 = (HeadFeatures.keys(f) @ theta0.T).argmax(1)
    wrong = torch.nonzero(pred0 != truth).flatten()
    right = torch.nonzero(pred0 == truth).flatten()
    assert len(wrong) > 10
    feats = HeadFeatures(f[:10], f[wrong], f[right])
    data = EditData(None, None, None, truth[wrong].numpy(), wrong.numpy())
    weak = build("head_refit", refit_l2=1e-6).solve(theta0, feats, data)
    fixed = (feats.error_keys @ weak.theta.T).argmax(1) == truth[wrong]
    kept = (feats.anchor_keys @ weak.theta.T).argmax(1) == truth[right]
    assert fixed.double().mean() > 0.9 and kept.double().mean() > 0.97
    assert weak.info["anchors"] == len(right)
    strong = build("head_refit", refit_l2=1e6).solve(theta0, feats, data)
    assert float((strong.theta - theta0).abs().max()) < 1e-3


def _labelled_toy():
    """A linearly separable 3-class set whose head ``theta0`` (a wrong bias) misclassifies part:
    its keys, true classes and the model's decisions."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    f = torch.randn(300, 5, generator=g)
    truth = (f.double() @ w.T).argmax(1)
    theta0 = torch.cat([w, torch.tensor([[0.0], [0.0], [1.5]], dtype=torch.float64)], 1)
    return f, truth, theta0, (HeadFeatures.keys(f) @ theta0.T).argmax(1)


def test_head_dfr_fits_every_labelled_sample_and_needs_their_labels():
    """head_dfr (issue 30) is the refit at the anchors' true labels: with a weak ridge the wrong
    bias is undone on the anchors that were errors too (head_refit, which reads no anchor label,
    keeps those wrong); without anchor labels it refuses, naming where they come from."""
    f, truth, theta0, pred0 = _labelled_toy()
    edited, rest = torch.arange(0, 5), torch.arange(5, 300)
    assert (pred0[rest] != truth[rest]).sum() > 10
    feats = HeadFeatures(f[:10], f[edited], f[rest])
    data = EditData(None, None, None, truth[edited].numpy(), edited.numpy())
    data.anchor_labels = truth[rest].numpy()
    dfr = build("head_dfr", refit_l2=1e-6).solve(theta0, feats, data)
    refit = build("head_refit", refit_l2=1e-6).solve(theta0, feats, data)

    def rest_acc(t):
        return float(((feats.anchor_keys @ t.T).argmax(1) == truth[rest]).double().mean())

    assert rest_acc(dfr.theta) > 0.97 and rest_acc(refit.theta) < rest_acc(theta0) + 0.02
    data.anchor_labels = None
    with pytest.raises(editors.EditError, match="anchor_labels"):
        build("head_dfr").solve(theta0, feats, data)


@pytest.mark.parametrize("name", ["head_anchored", "head_refit"])
def test_the_label_blind_anchor_editors_never_read_the_anchors_labels(name):
    """head_anchored and head_refit keep the anchors at the model's own decisions: shuffling (or
    dropping) the anchors' true labels leaves their edit bit-identical (head_dfr's does change)."""
    f, truth, theta0, pred0 = _labelled_toy()
    wrong = torch.nonzero(pred0 != truth).flatten()[:8]
    rest = torch.tensor(np.setdiff1d(np.arange(300), wrong.numpy()))
    feats = HeadFeatures(f[:10], f[wrong], f[rest])
    out = []
    for labels in (
        truth[rest].numpy(),
        np.random.default_rng(0).permutation(truth[rest].numpy()),
        None,
    ):
        data = EditData(None, None, None, truth[wrong].numpy(), wrong.numpy())
        data.anchor_labels = labels
        out.append(build(name).solve(theta0, feats, data).theta)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    data.anchor_labels = np.random.default_rng(0).permutation(truth[rest].numpy())
    shuffled = build("head_dfr").solve(theta0, feats, data).theta
    data.anchor_labels = truth[rest].numpy()
    assert not torch.equal(shuffled, build("head_dfr").solve(theta0, feats, data).theta)


def _headroom_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_head_headroom.py"
    spec = importlib.util.spec_from_file_location("bench_head_headroom", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_headroom_benchmark_judges_its_test_refit_out_of_sample_in_halves():
    """benchmarks/bench_head_headroom.py (issue 30's evidence): on labels that are pure noise the
    head refit on Test itself gains on Test (it fits the noise), the refit cross-fitted in halves
    gains nothing; a wrong bias is undone by both."""
    bench = _headroom_module()
    g = torch.Generator().manual_seed(1)
    f = torch.randn(200, 40, generator=g)
    keys = HeadFeatures.keys(f)
    noise = torch.randint(0, 3, (200,), generator=g)
    theta0 = torch.zeros(3, 41, dtype=torch.float64)
    theta0[:, -1] = torch.tensor([0.0, 0.1, 0.2])
    feats = {"theta0": theta0, "ft_val": (keys[:100], noise[:100]), "test": (keys, noise)}
    inside = bench.headroom(feats, "test", 1e-6)
    crossed = bench.headroom(feats, "test/2", 1e-6)
    assert inside["test_delta_points"] > 12 and crossed["test_delta_points"] < 5
    assert crossed["test_fixed"] + crossed["test_broken"] > 0 and crossed["final_grad_max"] < 1e-5
    f, truth, theta_b, _ = _labelled_toy()
    keys = HeadFeatures.keys(f)
    feats = {"theta0": theta_b, "ft_val": (keys[:100], truth[:100]), "test": (keys, truth)}
    assert bench.headroom(feats, "test/2", 1e-6)["test_delta_points"] > 5


def test_the_headroom_benchmark_chooses_the_ridge_on_the_design_seeds_ft_val_alone():
    """The out-of-selection point reads only the design seeds' FT-Val figures of the Edit-Discovery
    refit: Test, the other seeds and the other fits may say anything."""
    bench = _headroom_module()
    rows = []
    for seed, fit, l2, dv, rv, dt in [
        (42, "edit_discovery", 0.1, 0.3, 0.4, -9.0),
        (42, "edit_discovery", 0.01, 0.5, 0.9, 9.0),  # over the 0.5 % budget
        (42, "edit_discovery", 1.0, 0.1, 0.1, 9.0),
        (45, "edit_discovery", 1.0, 9.0, 0.0, 9.0),  # not a design seed
        (42, "test", 1.0, 9.0, 0.0, 9.0),  # not the Edit-Discovery refit
    ]:
        rows.append(
            dict(
                seed=seed,
                fit=fit,
                l2=l2,
                ft_val_delta_points=dv,
                ft_val_regression_pct=rv,
                test_delta_points=dt,
            )
        )
    df = pd.DataFrame(rows)
    assert bench.choose(df, [42], 0.005) == 0.1
    assert bench.choose(df, [42], 0.0005) is None
