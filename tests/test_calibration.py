"""Issue 11: calibrated AlphaEdit, real MEMIT, preservation error on a trained model's keys, the
regression-budget judgement, fair baselines and the smaller correctness items."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vitedit import budget, checkpoints, editors, locate, methods, models, params, report
from vitedit.columns import PRESERVATION_BOUND
from vitedit.editors import EditData, EditError, preservation, records, solve, statistics

from conftest import ROOT, make_liver

PARAMS_DIR = ROOT / "params"


# --------------------------------------------------------------------------- the solve
def spectrum(evals, seed=0):
    q, _ = torch.linalg.qr(
        torch.randn(
            len(evals),
            len(evals),
            generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64,
        )
    )
    return q @ torch.diag(torch.as_tensor(evals, dtype=torch.float64)) @ q.T


def test_relative_null_space_is_scale_free_and_absolute_is_not():
    m = spectrum([1e-6, 1e-4, 1e-2, 1.0, 3.0])
    rel = solve.null_space_projection(m, 1e-3, "relative")[1]["kept_dim"]
    assert rel == 2  # below 1e-3 x 3 = 3e-3
    for scale in (1e-3, 1e3):
        assert solve.null_space_projection(m * scale, 1e-3, "relative")[1]["kept_dim"] == rel
    assert solve.null_space_projection(m * 1e3, 1e-3, "absolute")[1]["kept_dim"] == 0
    with pytest.raises(EditError, match="unknown null-space rule"):
        solve.null_space_projection(m, 1e-3, "bogus")


def test_l2_zero_is_refused_before_anything_runs():
    unchecked = {**params.defaults(), "L2": 0.0, "mom2_update_weight": 0.0}  # past the schema
    with pytest.raises(EditError, match="L2 = 0.*singular"):
        methods.get("alphaedit").build(unchecked, layers=[1], stats_cache=None)
    with pytest.raises(EditError, match="singular"):
        solve.alphaedit_update(
            torch.randn(4, 2, dtype=torch.float64),
            torch.randn(6, 2, dtype=torch.float64),
            torch.eye(6, dtype=torch.float64),
            L2=0.0,
        )
    with pytest.raises(params.ParamError, match="L2.*> 0"):
        params.validate({"L2": 0})
    with pytest.raises(EditError, match="mom2_update_weight"):
        methods.get("memit").build(unchecked, layers=[1], stats_cache=None)


def test_memit_solves_covariance_weighted_least_squares():
    g = torch.Generator().manual_seed(3)
    k = torch.randn(12, 4, generator=g, dtype=torch.float64)
    r = torch.randn(5, 4, generator=g, dtype=torch.float64)
    k0 = torch.randn(12, 300, generator=g, dtype=torch.float64)
    c0 = k0 @ k0.T / 300
    lam = 50.0
    dw = solve.alphaedit_update(r, k, torch.eye(12, dtype=torch.float64), None, 0.0, lam * c0)
    want = r @ k.T @ torch.linalg.inv(k @ k.T + lam * c0)  # Meng et al. 2023, eq. 14
    assert torch.allclose(dw, want, atol=1e-10)
    noproj = solve.alphaedit_update(r, k, torch.eye(12, dtype=torch.float64), None, 1e-6)
    assert not torch.allclose(dw, noproj, atol=1e-3)  # the P = I ablation is not MEMIT


def test_methods_are_named_for_what_they_are():
    assert methods.get("memit").editor == "vitedit.editors.memit:MEMIT"
    assert "mom2_update_weight" in methods.get("memit").params
    assert methods.get("alphaedit_noproj").fixed["null_space"] is False
    assert "not MEMIT" in methods.get("alphaedit_noproj").description
    d = params.defaults()
    assert (d["clamp_norm_factor"], d["v_weight_decay"]) == (0.75, 0.5)  # MEMIT/AlphaEdit hparams
    assert (d["nullspace_rule"], d["L2_rule"]) == ("relative", "relative")


# --------------------------------------------------------------------------- preservation on a trained model
@pytest.fixture(scope="module")
def trained_edit_set(trained_toy):
    """Keys from the trained tiny model (real activations, full-rank spectrum), its Test errors."""
    _, data, split, model = trained_toy
    cfg = models.get_config("vit_tiny_test")
    imgs, labels = data.images["test"], data.labels["test"]
    pred = models.predict_logits(model, imgs, cfg).argmax(1).numpy()
    wrong = np.flatnonzero(pred != labels)[:4]
    assert len(wrong), "the toy model should make mistakes"
    ft = split.images(data, "ft_train")
    es = EditData(ft[:60], np.arange(60), imgs[wrong], labels[wrong], wrong, None, ft[60:])
    return model, models.Runner(cfg, 256, "cpu"), es


def build(name, **over):
    """The registered editor with the schema's settings but ``over``, on layers 1 and 2."""
    context = {"layers": [1, 2], "stats_cache": None} if methods.get(name).uses_layers else {}
    return editors.build(name, progress=False, **context, **over)


def test_alphaedit_defaults_preserve_the_trained_models_keys(trained_edit_set):
    model, cfg, es = trained_edit_set
    res = build("alphaedit").edit(model, cfg, es)
    pres = res.info["preservation"]
    per_layer = res.info["layer_info"]
    assert set(per_layer) == {"L1.mlp", "L2.mlp"}
    for li in per_layer.values():
        assert li["preservation_insample_n_keys"] > 0 and li["preservation_heldout_n_keys"] > 0
        assert 0 <= li["preservation_insample_median"] <= li["preservation_insample_p95"]
    assert pres["insample_median_max"] <= PRESERVATION_BOUND, pres
    assert pres["heldout_median_max"] <= 5 * PRESERVATION_BOUND, pres
    assert pres["exceeds_bound"] is False


def test_the_original_settings_break_the_bound_and_are_flagged(trained_edit_set):
    model, cfg, es = trained_edit_set
    original = params.load_yaml(PARAMS_DIR / "original.yaml")
    res = build("alphaedit", **original).edit(model, cfg, es)
    assert res.info["preservation"]["insample_median_max"] > PRESERVATION_BOUND
    assert res.info["preservation"]["exceeds_bound"] is True
    assert "above the bound" in records.preservation_warnings({"alphaedit": res})[0]
    # the ablation reports its error but promises nothing, so it is not flagged
    res = build("alphaedit_noproj", L2=1e-4, L2_rule="absolute").edit(model, cfg, es)
    assert res.info["preservation"]["exceeds_bound"] is None
    assert np.isfinite(res.info["preservation"]["insample_median_max"])


def test_preservation_error_is_zero_for_no_change_and_exact_for_a_known_one(trained_edit_set):
    model, cfg, es = trained_edit_set
    w = model.blocks[1].mlp.fc2.weight.detach().double()
    zero = preservation.preservation_error(
        model, cfg, {(1, "mlp"): torch.zeros_like(w)}, es.stats_images, "cls+all"
    )
    assert zero["L1.mlp"]["median"] == 0 and zero["L1.mlp"]["n_keys"] == 60 * 17  # 16 patches + CLS
    half = preservation.preservation_error(
        model, cfg, {(1, "mlp"): 0.5 * w}, es.stats_images, "cls"
    )
    assert half["L1.mlp"]["n_keys"] == 60
    assert (
        abs(half["L1.mlp"]["median"] - 0.5) < 1e-5 and abs(half["L1.mlp"]["frobenius"] - 0.5) < 1e-5
    )


def test_evaluation_and_edits_share_one_precision(monkeypatch, trained_edit_set):
    """Evaluation, targets, keys, statistics and the preservation error all run under
    models.autocast (bf16 on CUDA, fp32 here): an edit is optimised in the precision it is judged in."""
    import inspect

    model, cfg, es = trained_edit_set
    assert (
        not models.autocast("cpu")._enabled and models.autocast("cpu").fast_dtype == torch.bfloat16
    )
    callers = set()
    real = models.autocast

    def spy(device):  # the caller, past Runner.autocast (the runner's way to the same context)
        frames = [f.function for f in inspect.stack()[1:3]]
        callers.add(frames[1] if frames[0] == "autocast" else frames[0])
        return real(device)

    monkeypatch.setattr(models, "autocast", spy)
    build("alphaedit", v_num_grad_steps=2).edit(model, cfg, es)
    # _batched: the batched forward behind predict_logits and predict_pre_logits
    want = {"_batched", "key_second_moment", "cls_states", "target_states", "keys"}
    assert want | {"preservation_keys"} <= callers, callers  # the keys preservation_error reads


def test_l2_and_the_target_are_calibrated(trained_edit_set):
    model, cfg, es = trained_edit_set
    ed = build("alphaedit", L2=2.0)
    res = ed.edit(model, cfg, es)
    moment, _ = statistics.key_second_moment(model, cfg, es.stats_images, (1, "mlp"), "cls+all")
    li = res.info["layer_info"]["L1.mlp"]
    assert abs(li["L2_effective"] - 2.0 * float(torch.trace(moment)) / moment.shape[0]) < 1e-9
    x = cfg.inputs(es.images)
    y = torch.as_tensor(es.labels, dtype=torch.long)
    with torch.enable_grad():
        z, h = build("alphaedit", clamp_norm_factor=0.3, v_weight_decay=0.0).target_states(
            model, cfg, x, y
        )
    ratio = (z - h).norm(dim=1) / h.norm(dim=1)
    assert ratio.max() <= 0.3 + 1e-5 and ratio.max() > 0.1  # clamped, and it does move


def test_memit_editor_uses_lambda_c0_and_no_carry_over(trained_edit_set):
    model, cfg, es = trained_edit_set
    ed = build("memit", mom2_update_weight=1e8)
    assert isinstance(ed, editors.MEMIT) and ed.accumulates is False and ed.name == "memit"
    res = ed.edit(model, cfg, es)
    li = res.info["layer_info"]["L1.mlp"]
    assert li["mom2_update_weight"] == 1e8 and li["kept_dim"] == li["dim"]
    assert li["update_norm"] < 1e-4 * li["weight_norm"]  # lambda -> infinity: C0 wins, no change
    weak = build("memit", mom2_update_weight=1e-2).edit(model, cfg, es)
    assert weak.info["layer_info"]["L1.mlp"]["update_norm"] > 100 * li["update_norm"]


def test_original_params_file_is_the_original_configuration():
    original = params.load_yaml(PARAMS_DIR / "original.yaml")
    assert original["nullspace_rule"] == "absolute" and original["nullspace_threshold"] == 1e-2
    assert original["L2_rule"] == "absolute" and original["L2"] == 1e-4
    assert (original["clamp_norm_factor"], original["v_weight_decay"]) == (4.0, 1e-3)
    assert original["v_weight_decay_rule"] == "absolute"
    assert (original["baseline_epochs"], original["retrain_epochs"], original["baseline_lr"]) == (
        10,
        10,
        1e-5,
    )
    assert original["max_samples"] == 50
    params.resolve(PARAMS_DIR / "base.yaml", PARAMS_DIR / "original.yaml")  # a valid layer


def test_cli_baseline_epochs_sets_both_baselines_as_the_original_did():
    from vitedit import cli

    args = cli.build_parser().parse_args(["--baseline-epochs", "7"])
    p = cli.resolve_params(args)
    assert (p["baseline_epochs"], p["retrain_epochs"]) == (7, 7)
    assert cli.resolve_params(cli.build_parser().parse_args([]))["retrain_epochs"] is None


# --------------------------------------------------------------------------- the regression budget
def fake_summary():
    rows = []
    # method a: setting 1 fixes more but regresses 3 % on FT-Val; setting 2 regresses 0 %
    for cid, fix, vreg, test in (("a1", 0.8, 0.03, -0.5), ("a2", 0.4, 0.0, 0.5)):
        for seed, jitter in ((1, -0.05), (2, 0.0), (3, 0.05)):
            rows.append(
                dict(
                    dataset="d",
                    method="a",
                    config_id=cid,
                    seed=seed,
                    status="ok",
                    edit_fix_ratio=fix + jitter,
                    val_regression_rate=vreg,
                    proj_regression_rate=vreg + 0.01,
                    test_acc_delta=test,
                    test_mcnemar_p=0.5,
                    edit_time_seconds=1.0,
                    val_total=100,
                    val_acc_before=0.6,
                    experiment=f"{cid}{seed}",
                )
            )
    # a setting with one lucky seed only (the others failed) is never eligible
    rows.append(
        dict(
            dataset="d",
            method="a",
            config_id="a3",
            seed=1,
            status="ok",
            edit_fix_ratio=1.0,
            val_regression_rate=0.0,
            proj_regression_rate=0.0,
            test_acc_delta=0.0,
        )
    )
    rows.append(dict(dataset="d", method="a", config_id="a3", seed=2, status="failed"))
    # method b: every setting regresses more than 5 %
    rows.append(
        dict(
            dataset="d",
            method="b",
            config_id="b1",
            seed=1,
            status="ok",
            edit_fix_ratio=1.0,
            val_regression_rate=0.2,
            proj_regression_rate=0.2,
            test_acc_delta=0.0,
        )
    )
    return pd.DataFrame(rows)


def test_operating_point_is_chosen_on_ft_val_regression_never_on_test():
    pts = budget.operating_points(fake_summary())
    a1 = pts[(pts.method == "a") & (pts.budget == 0.01)].iloc[0]
    a5 = pts[(pts.method == "a") & (pts.budget == 0.05)].iloc[0]
    assert a1.config_id == "a2" and a5.config_id == "a1"
    assert a5.n_seeds == 3 and abs(a5.edit_fix_ratio - 0.8) < 1e-12
    half = a5.edit_fix_ratio_ci_high - a5.edit_fix_ratio
    assert abs(half - 4.303 * 0.05 / np.sqrt(3)) < 1e-3  # t(2) interval over the 3 seeds
    assert a5.val_correct == 60 and a5.n_incomplete == 1 and a5.n_settings == 3
    b = pts[pts.method == "b"]
    assert (b.config_id == "").all() and b.note.str.contains("no setting").all()
    # neither Test nor a reporting set (held-out FT-Train) plays a part: shuffling every one of
    # their columns across the settings changes nothing chosen
    s = fake_summary()
    rng = np.random.default_rng(0)
    reported = [c for c in s.columns if c.startswith(("test_", "proj_", "ed_rest_"))]
    assert {"test_acc_delta", "proj_regression_rate"} <= set(reported)
    for c in reported:
        s[c] = rng.permutation(s[c].to_numpy())
    assert list(budget.operating_points(s).config_id) == list(pts.config_id)
    table = budget.headline(pts)
    assert table.loc[("d", "b"), "fix rate @ <= 5%"] == "none within budget"


def test_method_grids_cross_only_their_own_method():
    from vitedit.sweep import plan, spec

    s = spec.check_spec(
        {
            "name": "t",
            "params": [str(PARAMS_DIR / "base.yaml"), str(PARAMS_DIR / "tiny.yaml")],
            "methods": ["alphaedit", "head"],
            "baselines": ["finetune"],
            "grid": {"num_edit_layers": [1, 2]},
            "method_grids": {
                "head": {"ewc_lambda": [1.0, 10.0, 100.0]},
                "finetune": {"baseline_lr": [1e-4, 1e-3]},
            },
        }
    )
    exps = plan.expand(s)
    count = pd.Series([e.method for e in exps]).value_counts().to_dict()
    assert count == {"alphaedit": 2, "head": 3, "baseline_finetune": 2}
    assert sorted(e.params["ewc_lambda"] for e in exps if e.method == "head") == [1.0, 10.0, 100.0]
    with pytest.raises(spec.SweepError, match="do not change head"):
        spec.check_spec({"name": "t", "methods": ["head"], "method_grids": {"head": {"L2": [1.0]}}})
    with pytest.raises(spec.SweepError, match="every method shares"):
        spec.check_spec(
            {"name": "t", "methods": ["head"], "method_grids": {"head": {"epochs": [1]}}}
        )
    with pytest.raises(spec.SweepError, match="not comparable"):
        spec.check_spec(
            {"name": "t", "methods": ["head"], "method_grids": {"head": {"max_edits": [2, 4]}}}
        )
    bad_layers = spec.check_spec(
        {
            "name": "t",
            "params": [str(PARAMS_DIR / "base.yaml"), str(PARAMS_DIR / "tiny.yaml")],
            "methods": ["alphaedit"],
            "method_grids": {"alphaedit": {"edit_layers": [[99]]}},
        }
    )
    with pytest.raises(spec.SweepError, match="99"):
        plan.expand(bad_layers)
    with pytest.raises(spec.SweepError, match="not run by this sweep"):
        spec.check_spec(
            {"name": "t", "methods": ["head"], "method_grids": {"memit": {"L2": [1.0]}}}
        )


def test_the_committed_sweep_gives_every_method_a_grid_and_three_seeds():
    from vitedit.sweep import spec

    s = spec.check_spec(spec.load_spec(PARAMS_DIR / "sweeps" / "retinamnist_edit.yaml"))
    assert len(s["seeds"]) >= 3
    for m in [*s["methods"], "baseline_finetune"]:
        grid = s["method_grids"].get(m, {})
        assert sum(len(v) for v in grid.values()) >= 3, m


# --------------------------------------------------------------------------- smaller items
def test_liver_checkpoints_differ_by_split_seed(tmp_path):
    from vitedit import datasets, splits

    folder = make_liver(tmp_path / "liver", n=40)
    labs = np.load(folder / "labs.npy")
    np.save(folder / "labs.npy", np.sort(labs))  # class-sorted, as the MERIT files are
    out = {}
    for seed in (0, 1):
        data = datasets.load_liver("liver4", str(folder), split_seed=seed)
        split = splits.make_split(data, 0.8, 0)
        p = {
            **params.defaults(),
            "dataset": "liver4",
            "liver_split_seed": seed,
            "checkpoint_dir": str(tmp_path),
        }
        out[seed] = (
            checkpoints.checkpoint_path(
                p, checkpoints.checkpoint_fields(p, data, split, torch.device("cpu"))
            ),
            data,
        )
    assert out[0][0] != out[1][0]
    assert not np.array_equal(out[0][1].images["test"], out[1][1].images["test"])


def test_retrain_defaults_to_the_original_epochs_and_reports_recorded_time(tmp_path, trained_toy):
    from vitedit.baselines import RetrainBaseline

    p, data, split, model = trained_toy
    q = {**p, "checkpoint_dir": str(tmp_path), "epochs": 2}

    def retrain(epochs=None):
        ed = RetrainBaseline(
            params=q, data=data, split=split, retrain_epochs=epochs, progress=False
        )
        ed.name = "baseline_retrain"
        return ed

    assert retrain().params["epochs"] == 2
    assert retrain(1).params["epochs"] == 1
    cfg = models.Runner(models.get_config("vit_tiny_test"), 256, "cpu")
    ed = split.images(data, "edit_discovery")[:2]
    es = EditData(
        ed,
        np.arange(2),
        ed,
        split.labels(data, "edit_discovery")[:2],
        np.arange(2),
        split.indices["edit_discovery"][:2],
    )
    first = retrain().edit(model, cfg, es)
    again = retrain().edit(model, cfg, es)
    assert first.info["reused"] is False and again.info["reused"] is True
    blob = torch.load(first.info["checkpoint"], weights_only=False)
    recorded = sum(r["seconds"] for r in blob["history"])
    assert abs(again.info["edit_seconds"] - recorded) < 1e-9


def test_tracing_separation_says_when_layers_are_not_separated():
    st = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3],
            "mean": [0.5, 0.4, 0.1, 0.05],
            "ci_low": [0.45, 0.35, 0.0, 0.0],
            "ci_high": [0.55, 0.45, 0.2, 0.1],
            "n_used": [12] * 4,
        }
    )
    ok = locate.separation(st, [0, 1])
    assert ok["separated"] is True and "12 samples" in ok["message"]
    bad = locate.separation(st, [0, 2])
    assert (
        bad["separated"] is False
        and bad["overlapping_layers"] == [1, 3]
        and "does not separate" in bad["message"]
    )


def test_run_warnings_name_broken_preservation_and_test_losses(tmp_path):
    m = {
        "alphaedit": {
            "preservation_exceeds_bound": True,
            "preservation_insample": 1.7,
            "preservation_heldout": 1.6,
            "test_acc_delta": -0.3,
            "test_acc_before": 0.5,
            "test_acc_after": 0.2,
            "test_mcnemar_p": 3e-16,
            "proj_n_heldout": 40,
        },
        "head": {
            "preservation_exceeds_bound": None,
            "test_acc_delta": -0.01,
            "proj_n_heldout": 400,
        },
        # not judged (no projection edit): NaN is not a "yes"
        "memit": {"preservation_exceeds_bound": float("nan"), "preservation_insample": 0.3},
    }
    (tmp_path / "metrics.json").write_text(json.dumps({"methods": m}))
    w = report.run_warnings(tmp_path)
    assert len(w) == 3 and all(x.startswith("alphaedit") for x in w)
    assert any("above the bound" in x for x in w) and any("falls by 30.0%" in x for x in w)
    assert any("only 40 held-out" in x for x in w)
    assert "Warnings" in report.warnings_html(w) and report.warnings_html([]) == ""


def test_an_ablation_in_a_methods_grid_is_its_own_row():
    """head_guarded's grid holds its no-guard ablation (head_keep_weight 0): reported as
    head_guarded[no_guard], never as one more try of head_guarded."""
    s = fake_summary()
    s = s[s.method == "a"].copy()
    s["method"] = "head_guarded"
    s["head_keep_weight"] = 1.0
    abl = s.copy()
    abl["head_keep_weight"] = 0.0
    abl["config_id"] = abl.config_id + "_0"
    abl["experiment"] = abl.experiment + "_0"
    abl["edit_fix_ratio"] = abl.edit_fix_ratio + 0.1  # it would win if it were folded in
    pts = budget.operating_points(pd.concat([s, abl], ignore_index=True))
    assert set(pts.method) == {"head_guarded", "head_guarded[no_guard]"}
    guarded = pts[pts.method == "head_guarded"]
    assert not guarded.config_id.str.endswith("_0").any()
