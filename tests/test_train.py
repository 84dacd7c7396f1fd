import json

import numpy as np
import pytest
import torch

from vitedit import checkpoints, params, splits, train
from vitedit.train import CheckpointError


def P(tmp_path, **kw):
    base = {
        "model": "vit_tiny_test",
        "epochs": 3,
        "batch_size": 32,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "progress": False,
        "patience": 0,
        "dataset": "toy",
        "lr": 3e-3,
        "seed": 0,
        "ft_train_ratio": 0.8,
    }
    base.update(kw)
    p = params.defaults()
    p.update(base)
    return p


def quiet(*a, **k):
    pass


@pytest.mark.parametrize("total", [1, 2, 3, 10, 1000])
def test_schedule_works_for_any_length(total):
    f = train.lr_lambda(total, 0.1)
    vals = [f(s) for s in range(total)]
    assert all(0 <= v <= 1 for v in vals) and max(vals) > 0
    if total >= 10:
        assert vals[-1] < 0.05 and max(vals) == pytest.approx(1, abs=0.1)


def test_only_ft_train_reaches_a_training_step(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    seen = []
    train.fit(
        P(tmp_path), toy, s, progress=False, on_batch=lambda pos: seen.append(pos.copy()), log=quiet
    )
    seen = np.concatenate(seen)
    assert set(seen.tolist()) == set(s.indices["ft_train"].tolist())
    assert not set(seen.tolist()) & set(s.indices["edit_discovery"].tolist())
    assert len(seen) == 3 * len(s.indices["ft_train"])  # each epoch sees FT-Train once


def test_training_is_deterministic_and_learns(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    a = train.fit(P(tmp_path / "a", epochs=6), toy, s, False, log=quiet)
    b = train.fit(P(tmp_path / "b", epochs=6), toy, s, False, log=quiet)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    assert a.meta["best_val_acc"] > 0.6  # toy data is easy; chance is 1/3


def test_identical_settings_reuse_the_checkpoint_and_others_do_not(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    first = train.fit(P(tmp_path), toy, s, False, log=quiet)
    calls = []
    again = train.fit(P(tmp_path), toy, s, False, on_batch=calls.append, log=quiet)
    assert again.reused and not calls and again.checkpoint == first.checkpoint
    names = {first.checkpoint.name}
    for p, split in [
        (P(tmp_path, seed=1), splits.make_split(toy, 0.8, 1)),
        (P(tmp_path, ft_train_ratio=0.7), splits.make_split(toy, 0.7, 0)),
        (P(tmp_path, lr=1e-3), s),
        (P(tmp_path, epochs=2), s),
        (P(tmp_path, augment_flips=False), s),
    ]:
        fields = checkpoints.checkpoint_fields(p, toy, split, torch.device("cpu"))
        names.add(checkpoints.checkpoint_path(p, fields).name)
    assert len(names) == 6
    # a parameter added later is left out of the name at its default: earlier checkpoints stay valid
    default = checkpoints.checkpoint_fields(P(tmp_path), toy, s, torch.device("cpu"))
    assert "augment_flips" not in default["train"]


def test_augmentation_without_flips_keeps_left_and_right():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, :, :6] = 1.0  # a bright band on the left
    out = train.augment(x, torch.Generator().manual_seed(0), flips=False)
    assert (out[:, :, :, :4].mean((1, 2, 3)) > 0.9).all()  # still on the left for every image
    assert (out[:, :, :, -8:].abs().sum((1, 2, 3)) == 0).all()
    flipped = train.augment(x, torch.Generator().manual_seed(0))
    assert (flipped[:, :, :, -4:].mean((1, 2, 3)) > 0.9).any()  # flips move it for some


def test_selected_model_is_the_best_validation_epoch(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    r = train.fit(P(tmp_path, epochs=5), toy, s, False, log=quiet)
    h = r.history
    assert r.meta["best_val_acc"] == pytest.approx(h.val_acc.max())
    best = h.loc[h.epoch == r.meta["best_epoch"]].iloc[0]
    from vitedit import models

    ev = train.evaluate(
        r.model,
        s.images(toy, "ft_val"),
        s.labels(toy, "ft_val"),
        models.get_config("vit_tiny_test"),
        64,
        "cpu",
    )
    assert ev["acc"] == pytest.approx(best.val_acc) and ev["loss"] == pytest.approx(
        best.val_loss, rel=1e-4
    )
    reloaded, meta = checkpoints.load_checkpoint(r.checkpoint)
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, r.model.state_dict()[k])


def test_early_stopping(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    r = train.fit(P(tmp_path, epochs=40, patience=2, lr=1e-9), toy, s, False, log=quiet)
    assert len(r.history) == 4 and r.meta["stopped_early"]  # best at 1, then 3 epochs without gain
    assert train.improved({"acc": 0.5, "loss": 1.0}, {"val_acc": 0.4, "val_loss": 0.1})
    assert not train.improved({"acc": 0.5, "loss": 1.0}, {"val_acc": 0.5, "val_loss": 1.00001})


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    full = train.fit(P(tmp_path / "full", epochs=3), toy, s, False, log=quiet)

    n_batches = [0]

    def crash(pos):
        n_batches[0] += 1
        if n_batches[0] == 5:  # inside epoch 2 (3 batches per epoch)
            raise KeyboardInterrupt

    p = P(tmp_path / "cut", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train.fit(p, toy, s, False, on_batch=crash, log=quiet)
    ckpts = list((tmp_path / "cut" / "ckpt").glob("*.pt"))
    assert [c.name.endswith(".resume.pt") for c in ckpts] == [
        True
    ]  # no final checkpoint after a kill
    p["resume"] = True
    resumed = train.fit(p, toy, s, False, log=quiet)
    assert len(resumed.history) == 3
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, full.model.state_dict()[k]), k
    assert not list((tmp_path / "cut" / "ckpt").glob("*.resume.pt"))


def test_run_reference_refuses_changed_or_foreign_checkpoints(tmp_path, toy):
    s = splits.make_split(toy, 0.8, 0)
    r = train.fit(P(tmp_path), toy, s, False, log=quiet)
    run = tmp_path / "run"
    run.mkdir()
    train.record_in_run(run, r, s)
    model, meta = checkpoints.load_run_model(run, s)
    assert meta["best_epoch"] == r.meta["best_epoch"]
    with pytest.raises(CheckpointError, match="split"):
        checkpoints.load_run_model(run, splits.make_split(toy, 0.8, 5))
    with pytest.raises(CheckpointError, match="train"):
        checkpoints.load_run_model(run, s, params=P(tmp_path, epochs=4))
    checkpoints.load_run_model(run, s, params=P(tmp_path))
    with pytest.raises(CheckpointError, match="train"):
        checkpoints.load_run_model(run, s, params=P(tmp_path, augment_flips=False))
    # a recipe without flips is recorded as such and accepted by its own stages
    r = train.fit(P(tmp_path, augment_flips=False), toy, s, False, log=quiet)
    train.record_in_run(run, r, s)
    checkpoints.load_run_model(run, s, params=P(tmp_path, augment_flips=False))
    with pytest.raises(CheckpointError, match="train"):
        checkpoints.load_run_model(run, s, params=P(tmp_path))
    ref = json.loads((run / checkpoints.CHECKPOINT_REF).read_text())
    torch.save({"tampered": True}, ref["path"])
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.load_run_model(run, s)
    with pytest.raises(CheckpointError, match="02_train"):
        checkpoints.load_run_model(tmp_path / "nothing")


def test_bf16_training_is_deterministic_named_apart_and_evaluated_with_fused_attention(
    tmp_path, toy, monkeypatch
):
    """``train_precision: bf16`` on the CPU: math attention while training (its bf16 backward is
    fast), the fused attention back for evaluation, the same weights twice, another checkpoint."""
    from conftest import toy_params

    split = splits.make_split(toy, 0.8, 0)
    seen = []

    def on_batch(pos):
        flags = [m.fused_attn for m in model_ref[0].modules() if hasattr(m, "fused_attn")]
        seen.append(bool(flags) and any(flags))

    model_ref = [None]
    real = train.models.build_model

    def build(*a, **k):
        model_ref[0] = real(*a, **k)
        return model_ref[0]

    monkeypatch.setattr(train.models, "build_model", build)
    runs = [
        train.fit(
            toy_params(tmp_path / f"c{i}", train_precision="bf16"),
            toy,
            split,
            progress=False,
            on_batch=on_batch,
            log=lambda *a: None,
        )
        for i in range(2)
    ]
    assert seen and not any(seen)  # no fused attention during a bf16 step
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(m.fused_attn for m in runs[0].model.modules() if hasattr(m, "fused_attn"))
    fp32 = checkpoints.checkpoint_fields(toy_params(tmp_path), toy, split, torch.device("cpu"))
    bf16 = runs[0].meta["fields"]
    assert (fp32["precision"], bf16["precision"], bf16["attention"]) == ("fp32", "bf16", "math")
    assert runs[0].checkpoint.name != checkpoints.checkpoint_path(toy_params(tmp_path), fp32).name


def test_the_cpu_thread_count_is_part_of_the_checkpoint_name(toy, tmp_path):
    """One epoch of the same seed at 1 and at 2 CPU threads gives other weights (the matmuls'
    reductions split by thread): the count is in the name, so neither picks up the other's
    checkpoint; one thread keeps the name it always had (no field)."""
    from conftest import toy_params

    split = splits.make_split(toy, 0.8, 0)
    before = torch.get_num_threads()
    names = {}
    try:
        for n in (1, 2):
            p = toy_params(tmp_path / f"t{n}", num_threads=n, epochs=1)
            r = train.fit(p, toy, split, progress=False, log=lambda *a: None)
            names[n] = (r.checkpoint.name, r.meta["fields"].get("threads"))
    finally:
        torch.set_num_threads(before)
    assert names[1][1] is None and names[2][1] == 2
    assert names[1][0] != names[2][0]


def test_the_cpu_kind_is_part_of_the_checkpoint_name(toy, tmp_path, monkeypatch):
    """The same seed trains other weights on another kind of CPU (BloodMNIST in bf16: Intel Xeons
    with AMX against an AMD EPYC; RetinaMNIST in fp32 too): the vendor and the instruction set the
    matmuls use are in the name, except on the published models' kind (Intel, AVX-512, AMX in
    bf16), whose names stay as they were."""
    from conftest import toy_params

    split = splits.make_split(toy, 0.8, 0)
    monkeypatch.delenv("VITEDIT_CPU_KERNELS", raising=False)
    monkeypatch.setattr(checkpoints.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    real_vendor = checkpoints.cpu_vendor

    def name(precision, vendor="intel", amx=True, avx512_bf16=True):
        monkeypatch.setattr(checkpoints, "cpu_vendor", lambda: vendor)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        bf16 = lambda: avx512_bf16  # noqa: E731
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", bf16, raising=False)
        p = toy_params(tmp_path, train_precision=precision)
        fields = checkpoints.checkpoint_fields(p, toy, split, torch.device("cpu"))
        kind = fields["cpu_kernels"] if "cpu_kernels" in fields else None  # absent, not None
        assert kind != "None"
        return kind, checkpoints.checkpoint_path(p, fields).name

    published = name("bf16"), name("fp32")
    assert [k for k, _ in published] == [None, None]  # the names they always had
    amd = name("bf16", "amd", amx=False), name("fp32", "amd", amx=False)
    assert [k for k, _ in amd] == ["amd_avx512_bf16", "amd_avx512"]
    assert name("bf16", amx=False, avx512_bf16=False)[0] == "intel_avx512"  # no bf16 instructions
    assert name("fp32", amx=False, avx512_bf16=False) == published[1]  # fp32 ignores bf16 units
    assert len({n for _, n in (*published, *amd)}) == 4
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert name("fp32")[0] == "intel_avx2"
    monkeypatch.setattr(checkpoints.platform, "machine", lambda: "aarch64")
    assert name("fp32")[0] == name("bf16")[0] == "aarch64"  # another architecture
    monkeypatch.setenv("VITEDIT_CPU_KERNELS", "intel_amx")
    assert name("bf16", "amd") == published[0]  # a forced kind wins over the probe
    monkeypatch.setenv("VITEDIT_CPU_KERNELS", "Intel AMX")
    with pytest.raises(CheckpointError, match="VITEDIT_CPU_KERNELS='Intel AMX' is not a CPU kind"):
        name("bf16")
    monkeypatch.setattr(checkpoints.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("VITEDIT_CPU_KERNELS")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "NO AVX")
    assert name("fp32")[0] == "intel_no_avx"  # a probe's odd spelling is made a valid kind

    def no_cpuinfo(self):
        raise OSError("no /proc/cpuinfo")

    monkeypatch.setattr(checkpoints.Path, "read_text", no_cpuinfo)  # not Linux
    monkeypatch.setattr(checkpoints.platform, "processor", lambda: "AMD64 Family 25, AuthenticAMD")
    assert real_vendor() == "amd"


def test_a_checkpoint_from_before_the_cpu_kind_is_adopted_under_its_true_name(
    toy, tmp_path, monkeypatch, capsys
):
    """A checkpoint trained on another kind of CPU before the kind entered the name carries the
    published kind's name; ``adopt`` copies it to the name the training would give it today, so
    that a run on that machine reuses it instead of training again."""
    s = splits.make_split(toy, 0.8, 0)
    monkeypatch.setenv("VITEDIT_CPU_KERNELS", "intel_avx512")  # the old name: no kind in it
    old = train.fit(P(tmp_path), toy, s, False, log=quiet).checkpoint
    blob = torch.load(old, weights_only=False)
    torch.save(blob | {"created": "2026-12-03T10:00:00"}, old)  # trained before the field
    monkeypatch.setenv("VITEDIT_CPU_KERNELS", "amd_avx512")  # the machine it really trained on
    want = checkpoints.checkpoint_path(
        P(tmp_path), checkpoints.checkpoint_fields(P(tmp_path), toy, s, torch.device("cpu"))
    )
    assert want != old and not want.exists()
    printed = "fp32=amd_avx512 bf16=amd_avx512_bf16"  # what `kind` prints there: fp32's is taken
    assert checkpoints.main(["adopt", printed, str(old)]) == 0
    assert str(want) in capsys.readouterr().out
    again = train.fit(P(tmp_path), toy, s, False, log=quiet)
    assert again.reused and again.checkpoint == want and old.is_file()  # run folders point at old
    a, b = torch.load(old, weights_only=False), torch.load(want, weights_only=False)
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    assert b["adopted"] == {"from": old.name, "kind": "amd_avx512"}
    assert checkpoints.adopt(old, printed) == want  # again: the same weights, nothing to do
    other = b | {"state_dict": {k: v + 1 for k, v in b["state_dict"].items()}}
    torch.save(other, want)
    with pytest.raises(CheckpointError, match="holds other weights"):
        checkpoints.adopt(old, printed)
    want.unlink()
    bf16_gpu = blob | {"fields": {**blob["fields"], "precision": "bf16"}}
    late = blob | {"created": "2026-12-05T10:00:00"}
    for f, b in (("gpu", bf16_gpu), ("late", late)):
        torch.save(b, tmp_path / f"{f}_{params.digest(checkpoints.canonical(b['fields']))}.pt")
    for path, kind, why in [
        (want, "amd_avx512", "does not exist"),
        (old, "intel_avx512", "published models' kind in fp32"),
        (old, "bf16=amd_avx512_bf16", "no kind is given for fp32"),
        (old, "AMD EPYC", "is not '<kind>' or"),
        (old, "amd avx512", "is not '<kind>' or"),
        (old, "fp64=x", "is not '<kind>' or"),
        (next(tmp_path.glob("gpu_*.pt")), "amd_avx512_bf16", "trained on a GPU"),
        (next(tmp_path.glob("late_*.pt")), "amd_avx512", "trained after the kind entered"),
    ]:
        with pytest.raises(CheckpointError, match=why):
            checkpoints.adopt(path, kind)
    renamed = old.with_name(old.name.replace(old.stem[-12:], "0" * 12))
    old.rename(renamed)
    with pytest.raises(CheckpointError, match="does not carry its fields' hash"):
        checkpoints.adopt(renamed, "amd_avx512")
    # the command line checks every file before it writes one, and says why in words
    good = renamed.rename(old)
    assert checkpoints.main(["adopt", "amd_avx512", str(good), str(renamed)]) == 2
    assert "error: " in capsys.readouterr().err and not want.exists()
