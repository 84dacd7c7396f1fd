"""Bad input never trains (issue: NaN data, silent fallbacks, locked-in flags, raw tracebacks).

Each test names the input; the CLI is called in-process (``cli.main``) where it must refuse before
anything is written, so these tests take seconds.
"""

import numpy as np
import pytest
import torch
import yaml

from vitedit import (
    checkpoints,
    cli,
    comparison,
    datasets,
    models,
    nb,
    params,
    runs,
    splits,
    stages,
    sweep,
    train,
)
from vitedit.params import ParamError

from conftest import ROOT, make_liver, make_npz, synthetic_data, toy_params

TINY = str(ROOT / "params" / "tiny.yaml")


def run_cli(tmp_path, *args):
    """``vitedit`` in-process with temporary run and checkpoint folders; (exit code, stderr)."""
    argv = [
        "--params",
        TINY,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        *map(str, args),
    ]
    return cli.main(argv)


def nothing_written(tmp_path):
    return not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()


# 1. non-finite and float images ------------------------------------------------------------
def test_nan_pixels_in_a_medmnist_file_are_refused_naming_split_and_index(tmp_path):
    imgs = np.random.default_rng(0).random((40, 28, 28, 3)).astype(np.float32) * 255
    imgs[7, 3, 4, 0] = np.nan
    f = make_npz(tmp_path / "retinamnist.npz", train_images=imgs)
    with pytest.raises(datasets.DataError, match=r"train_images.*not finite.*index 7"):
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False)


def test_float_medmnist_images_are_refused_before_anything_is_written(tmp_path, capsys):
    imgs = np.random.default_rng(0).random((40, 28, 28, 3)).astype(np.float32)
    f = make_npz(tmp_path / "data" / "retinamnist.npz", train_images=imgs)
    with pytest.raises(datasets.DataError, match=r"uint8"):
        datasets.check_medmnist_file(f, "retinamnist", 28, verify_md5=False)
    assert run_cli(tmp_path, "--data-path", f, "--set", "verify_md5=false") == 2
    assert "uint8" in capsys.readouterr().err and nothing_written(tmp_path)


def test_nan_liver_images_are_refused_naming_the_entry(tmp_path):
    folder = make_liver(tmp_path / "liver")
    imgs = np.load(folder / "imgs.npy", allow_pickle=True)
    imgs[5]["4"][0, 0, 0] = np.inf
    np.save(folder / "imgs.npy", imgs, allow_pickle=True)
    with pytest.raises(datasets.DataError, match=r"entry 5.*not finite"):
        datasets.load_liver("liver4", str(folder))


def test_a_non_finite_loss_stops_training_without_a_checkpoint(tmp_path):
    data = synthetic_data()
    split = splits.make_split(data, 0.8, 0)
    data.images["train"] = data.images["train"].astype(np.float32)
    data.images["train"][split.indices["ft_train"][0]] = (
        np.nan
    )  # past the loader: training must refuse
    p = toy_params(tmp_path / "ckpt", epochs=2)
    with pytest.raises(train.TrainingError, match="not finite"):
        train.fit(p, data, split, progress=False, log=lambda *a: None)
    assert not list((tmp_path / "ckpt").glob("*.pt"))


# 2. an explicit data folder without the file -----------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_an_explicit_data_folder_without_the_file_is_an_error(
    tmp_path, kind, retina_path, monkeypatch
):
    """Another copy of the file where the search would look (here $VITEDIT_DATA_ROOT) is not used."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "retinamnist.npz").symlink_to(retina_path)
    monkeypatch.setenv(datasets.DATA_ENV, str(elsewhere))
    folder = tmp_path / "data_here"
    if kind == "empty":
        folder.mkdir()
    with pytest.raises(datasets.DataError, match=f"data_path {folder}"):
        datasets.locate_medmnist("retinamnist", 28, str(folder))


# 3. empty sets of the 4-set protocol -------------------------------------------------------
def test_an_empty_validation_split_is_refused_with_the_counts(tmp_path):
    f = make_npz(tmp_path / "retinamnist.npz", n=(40, 0, 12))
    with pytest.raises(datasets.DataError, match=r"val.*0 images"):
        datasets.check_medmnist_file(f, "retinamnist", 28, verify_md5=False)
    data = synthetic_data(n_val=0)
    with pytest.raises(splits.SplitError, match=r"FT-Val.*0"):
        splits.make_split(data, 0.8, 0)


# 4. non-integer labels ---------------------------------------------------------------------
def test_float_labels_are_refused_not_truncated(tmp_path):
    labels = (np.arange(40) % 5).astype(np.float32).reshape(-1, 1) + 0.5
    f = make_npz(tmp_path / "retinamnist.npz", train_labels=labels)
    with pytest.raises(datasets.DataError, match="integer"):
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False)


# 5. run settings do not lock a run folder; stale results are not evaluated -----------------
def _done_run(tmp_path, **over):
    folder = runs.RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_params({**params.defaults(), **over})
    for stage in runs.NOTEBOOKS:
        folder.set_status(stage, "ok")
    return folder


def test_run_settings_do_not_lock_a_run_folder(tmp_path):
    folder = _done_run(
        tmp_path,
        resume=True,
        download=True,
        data_path="/somewhere/retinamnist.npz",
        checkpoint_dir="elsewhere",
    )
    p = {**params.defaults(), "resume": False, "methods": ["head"]}
    folder.check_compatible(p, "06_evaluate")  # no error: none of them changes a result
    with pytest.raises(runs.RunError, match="epochs"):
        folder.check_compatible({**p, "epochs": 3}, "06_evaluate")


def test_rerunning_an_edit_notebook_marks_only_what_depends_on_it_stale(tmp_path):
    folder = _done_run(tmp_path)
    nb.Run("05_edit_head", folder.path, {**params.defaults(), "run_dir": str(folder.path)}).begin()
    st = {k: v["status"] for k, v in folder.status().items()}
    assert st["04_edit_alphaedit"] == "ok" and st["07_baselines"] == "ok"
    assert st["06_evaluate"] == "stale" and st["05_edit_head"] == "running"


def test_evaluation_skips_the_edits_of_a_stale_notebook(tmp_path, trained_toy):
    p, data, split, model = trained_toy
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = train.fit(p, data, split, progress=False, log=lambda *a: None)
    ref = train.record_in_run(run_dir, result, split)
    q = dict(
        p,
        max_edits=4,
        projection_samples=40,
        bootstrap_samples=20,
        methods=["head", "head_closed_form"],
    )
    ctx = stages.Context(
        run_dir,
        q,
        data,
        split,
        torch.device("cpu"),
        model,
        result.meta,
        checkpoints.model_config_of(result.meta),
        ref,
    )
    stages.run_methods(ctx, stages.select_edits(ctx), "05_edit_head")
    folder = runs.RunFolder(run_dir)
    folder.set_status("05_edit_head", "ok")
    assert set(stages.evaluate_edits(ctx).evals) == {"head", "head_closed_form"}
    folder.set_status("05_edit_head", "stale", reason="04_edit_alphaedit was run again")
    ev = stages.evaluate_edits(ctx)
    assert ev.evals == {} and set(ev.skipped) == {"head", "head_closed_form"}
    assert "stale" in ev.skipped["head"]
    assert not set(comparison.load_metrics(run_dir).get("method", [])) & set(
        ev.skipped
    )  # no stale rows


# 6-7. checkpoints: truncated files, read-only stores ----------------------------------------
def test_a_truncated_checkpoint_is_named_as_corrupt(tmp_path, trained_toy):
    p, data, split, _ = trained_toy
    ckpt = checkpoints.checkpoint_path(
        p, checkpoints.checkpoint_fields(p, data, split, torch.device("cpu"))
    )
    bad = tmp_path / ckpt.name
    bad.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(checkpoints.CheckpointError, match=rf"{bad.name}.*corrupt.*delete it"):
        checkpoints.load_checkpoint(bad)


def test_an_existing_checkpoint_is_read_without_taking_the_lock(tmp_path, trained_toy, monkeypatch):
    """Reading a finished checkpoint needs no write access: no lock file is created."""
    p, data, split, _ = trained_toy

    def no_lock(path):
        raise PermissionError(f"read-only store: cannot create {path}.lock")

    monkeypatch.setattr(train, "file_lock", no_lock)
    r = train.fit(p, data, split, progress=False, log=lambda *a: None)
    assert r.reused


# 8-10. messages instead of tracebacks ------------------------------------------------------
def test_runs_dir_that_is_a_file_and_run_name_that_is_a_file(tmp_path, capsys, retina_path):
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli.main(["--params", TINY, "--runs-dir", str(f), "--data-path", str(retina_path)]) == 2
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("x")
    assert (
        cli.main(
            [
                "--params",
                TINY,
                "--runs-dir",
                str(tmp_path / "runs"),
                "--run-name",
                "taken",
                "--data-path",
                str(retina_path),
            ]
        )
        == 2
    )
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "assignment", ["epochs=[3", "epochs=!!python/object/apply:os.system ['true']"]
)
def test_bad_set_values_are_messages(assignment):
    with pytest.raises(ParamError, match="epochs"):
        params.parse_assignment(assignment)


def test_a_bad_grid_value_is_a_message(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "s", "params": [TINY], "methods": ["head"], "baselines": False})
    )
    assert sweep.main(["run", str(spec), "--grid", "L2=[1e-4", "--dry-run"]) == 2
    assert "--grid" in capsys.readouterr().err


def test_run_dir_through_set_is_refused_and_a_params_files_run_dir_is_ignored_aloud(
    tmp_path, capsys, retina_path
):
    assert (
        run_cli(tmp_path, "--set", f"run_dir={tmp_path / 'elsewhere'}", "--data-path", retina_path)
        == 2
    )
    assert "--run-name" in capsys.readouterr().err and nothing_written(tmp_path)
    f = tmp_path / "params.yaml"  # e.g. another run's params.yaml, passed back to start a new run
    f.write_text(f"run_dir: {tmp_path / 'elsewhere'}\nepochs: 2\n")
    args = cli.build_parser().parse_args(["--params", str(f), "--run-name", "x"])
    p = cli.resolve_params(args)
    assert p["run_dir"] is None and p["epochs"] == 2
    assert "run_dir in" in capsys.readouterr().err


def test_duplicate_keys_in_a_yaml_file_are_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epochs: 3\nlr: 0.1\nepochs: 5\n")
    with pytest.raises(ParamError, match=rf"(?s){f.name}.*duplicate key 'epochs'.*line 3"):
        params.load_yaml(f)


# 11. --help lists what works ----------------------------------------------------------------
def test_help_lists_only_supported_datasets():
    names = datasets.known_datasets()
    assert "chestmnist" not in names and "retinamnist" in names and "liver4" in names
    for name in names:
        datasets.dataset_info(name)  # every listed dataset is accepted


def test_yaml_merge_keys_still_work_and_odd_keys_are_messages(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("base: &b {epochs: 3, lr: 0.1}\n")
    assert params.load_yaml_text("a: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n", "t")["c"] == {"x": 2}
    with pytest.raises(ParamError, match="key"):
        params.load_yaml_text("? [1, 2]\n: 3\n", "t")


def test_more_paths_that_must_be_messages(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli.main(["--params", TINY, "--runs-dir", str(f), "--seeds", "1", "2"]) == 2
    assert "is a file" in capsys.readouterr().err
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "s", "params": [TINY], "methods": ["head"], "baselines": False})
    )
    assert sweep.main(["run", str(spec), "--sweep-dir", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert sweep.main(["trial", str(tmp_path / "missing.yaml"), "L2=1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sweep.main(["run", str(spec), "--set", "run_dir=/tmp/x", "--dry-run"]) == 2
    assert "run_dir" in capsys.readouterr().err


def test_a_corrupt_resume_file_is_named(tmp_path, trained_toy):
    p, data, split, _ = trained_toy
    q = dict(p, checkpoint_dir=str(tmp_path), resume=True, epochs=1)
    ckpt = checkpoints.checkpoint_path(
        q, checkpoints.checkpoint_fields(q, data, split, torch.device("cpu"))
    )
    ckpt.with_suffix(".resume.pt").write_bytes(b"not a torch file")
    with pytest.raises(checkpoints.CheckpointError, match=r"resume.*corrupt"):
        train.fit(q, data, split, progress=False, log=lambda *a: None)


def test_a_read_only_statistics_cache_is_computed_without_caching(tmp_path, monkeypatch):
    from vitedit.editors import statistics

    from conftest import tiny_vit

    model, cfg, imgs = tiny_vit(6)
    runner = models.Runner(cfg, 256, "cpu")

    def no_lock(path):
        raise PermissionError(f"read-only store: cannot create {path}.lock")

    monkeypatch.setattr(checkpoints, "file_lock", no_lock)
    cache = statistics.StatsCache(tmp_path, {"k": 1})
    moment, cached = statistics.cached_second_moment(model, runner, imgs, (1, "mlp"), "cls", cache)
    direct = statistics.key_second_moment(model, runner, imgs, (1, "mlp"), "cls")[0]
    assert not cached and torch.equal(moment, direct) and not list(tmp_path.glob("*.pt"))


def test_prerequisites_and_dependants_come_from_one_graph():
    for stage in runs.NOTEBOOKS:
        for other in runs.NOTEBOOKS:
            assert (other in runs.prerequisites(stage)) == (stage in runs.dependants(other))
    assert runs.prerequisites("05_edit_head") == ["01_split", "02_train", "03_locate"]
    folder = runs.RunFolder("/nonexistent")
    assert cli.notebooks_to_run("eval", folder) == [*runs.NOTEBOOKS[:5], "06_evaluate"]
    assert cli.notebooks_to_run("baseline1", folder) == [*runs.NOTEBOOKS[:3], "07_baselines"]


def test_preflight_checks_the_data_first_unless_it_may_download(tmp_path, monkeypatch):
    """The data's errors come before torch and timm are imported (a second, not ~10 s); with
    ``download`` the model settings are checked first, so nothing is fetched for a refused run."""
    from vitedit import execute

    calls = []

    def bad_model(p):
        calls.append(p["model"])
        raise params.ParamError("bad model")

    monkeypatch.setattr(execute, "_check_model", bad_model)
    p = params.resolve({"dataset": "retinamnist", "data_path": str(tmp_path / "nowhere")})
    with pytest.raises(datasets.DataError):
        execute.preflight(dict(p), log=lambda *a: None)
    assert calls == []  # refused on the data alone
    monkeypatch.setattr(
        datasets, "locate_medmnist", lambda *a, **k: pytest.fail("fetched before the model check")
    )
    with pytest.raises(params.ParamError, match="bad model"):
        execute.preflight(dict(p, download=True, data_path=None), log=lambda *a: None)
    assert not (tmp_path / "nowhere").exists()
    liver = dict(p, dataset="liver4", data_path=None, download=True)  # never downloaded: data first
    with pytest.raises(datasets.DataError, match="needs data_path"):
        execute.preflight(liver, log=lambda *a: None)
    assert len(calls) == 1  # the download case only
