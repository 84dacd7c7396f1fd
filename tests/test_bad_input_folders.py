"""Bad input, round two (issue 29), rows 1, 2 (JSON), 3 (advice), 9-11, 13-15: one writer per run
folder, data that cannot be classified, disks that cannot be written, files that cannot be read,
a killed sweep's workers, and refusals before anything is written."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from vitedit import cli, datasets, execute, locate, params, paths, report, runs
from vitedit.params import ParamError
from vitedit.sweep import dispatch
from vitedit.sweep import run as sweep_run
from vitedit.sweep import spec as sweep_spec

from conftest import ROOT, make_liver, make_npz

TINY = str(ROOT / "params" / "tiny.yaml")
LIB = str(ROOT / "lib")


def _cli(tmp_path, *args, runs_dir=None):
    return cli.main(
        ["--params", TINY, "--runs-dir", str(runs_dir or tmp_path / "runs"), *map(str, args)]
    )


def _hold(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s writer lock until it is killed."""
    code = (
        f"import sys, time; sys.path.insert(0, {LIB!r}); from vitedit import runs\n"
        f"with runs.writer({str(folder)!r}, 'vitedit --run-name a --seed 7'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --------------------------------------------------------------------------- row 1
def test_a_second_run_of_the_same_folder_is_refused_naming_the_holder(
    tmp_path, retina_path, capsys
):
    folder = tmp_path / "runs" / "a"
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text("seed: 42\n")
    holder = _hold(folder)
    try:
        rc = _cli(tmp_path, "--run-name", "a", "--seed", 7, "--stage", "data")
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert rc == 2
    assert f"being written by process {holder.pid}" in err and "--run-name" in err
    assert (folder / "params.yaml").read_text() == "seed: 42\n"  # nothing of the second run
    assert not (folder / "status.json").exists()


def test_a_cli_run_holds_its_folders_lock_while_its_stages_run(tmp_path, monkeypatch):
    seen = {}

    def stage(name, run_dir, p, log=print):
        probe = (
            f"import sys; sys.path.insert(0, {LIB!r}); from vitedit import runs\n"
            f"runs.check_not_busy({str(run_dir)!r})"
        )
        env = {k: v for k, v in os.environ.items() if k != runs.WRITER_ENV}
        seen["other"] = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env
        )
        runs.check_not_busy(run_dir)  # the holder's own kernels are its agents
        seen["holder"] = json.loads((run_dir / runs.WRITER_FILE).read_text())
        runs.RunFolder(run_dir).set_status(name, "ok")

    monkeypatch.setattr(execute, "run_notebook", stage)
    assert _cli(tmp_path, "--run-name", "b", "--stage", "data") == 0
    assert seen["other"].returncode != 0 and "being written by process" in seen["other"].stderr
    assert seen["holder"]["pid"] == os.getpid()
    assert not (tmp_path / "runs" / "b" / runs.WRITER_FILE).exists()  # released at the end


def test_a_notebook_by_hand_refuses_a_folder_a_run_is_writing(tmp_path):
    from vitedit import nb

    folder = tmp_path / "r"
    holder = _hold(folder)
    try:
        run = nb.Run("01_split", folder, params.resolve({"run_dir": str(folder)}))
        with pytest.raises(runs.RunError, match="being written by process"):
            run.begin()
    finally:
        holder.kill()
        holder.wait()
    assert not (folder / "status.json").exists()


# --------------------------------------------------------------------------- row 2 (JSON)
def test_json_outputs_never_hold_nan_or_infinity(tmp_path):
    blob = {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("-inf"), "d": np.ones(2)}
    text = paths.json_text(blob)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": None, "d": [1.0, 1.0]}
    runs.set_status(tmp_path, "x", "ok", rate=float("nan"))
    assert json.loads((tmp_path / "status.json").read_text(), parse_constant=pytest.fail)


# --------------------------------------------------------------------------- row 3 (advice)
def test_the_advice_for_unmeasurable_effects_fits_the_noises_size():
    assert "smaller noise_scale" in locate.layers.noise_advice(1e6)
    assert "larger noise_scale" in locate.layers.noise_advice(3.0)


# --------------------------------------------------------------------------- row 9
def test_a_single_class_file_is_refused_before_anything_is_written(tmp_path, capsys):
    zeros = {
        f"{s}_labels": np.zeros((k, 1), np.uint8)
        for s, k in zip(("train", "val", "test"), (40, 10, 12))
    }
    f = make_npz(tmp_path / "retinamnist.npz", **zeros)
    rc = _cli(tmp_path, "--data-path", f, "--set", "verify_md5=false", "--stage", "data")
    assert rc == 2 and "1 class" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(datasets.DataError, match="at least two classes"):
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False, log=lambda *a: None)


def test_liver2s_with_one_class_is_refused(tmp_path):
    folder = make_liver(tmp_path / "liver", n=12)
    np.save(folder / "labs.npy", np.arange(12) % 3)  # stages F0-F2 only: one class of liver2s
    with pytest.raises(datasets.DataError, match="liver2s.*1 class"):
        datasets.load_liver("liver2s", str(folder))


def test_a_class_absent_from_a_set_is_a_warning_in_words(tmp_path, retina_path):
    with np.load(retina_path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_labels"] = np.where(arrays["test_labels"] == 4, 3, arrays["test_labels"])
    f = tmp_path / "retinamnist.npz"
    np.savez(f, **arrays)
    rc = _cli(
        tmp_path,
        "--data-path",
        f,
        "--set",
        "verify_md5=false",
        "--stage",
        "data",
        "--run-name",
        "m",
    )
    assert rc == 0
    status = runs.RunFolder(tmp_path / "runs" / "m").stage("01_split")
    assert status["warnings"] == [
        "Test has no image of class 4 ('4'): its accuracy and regressions cannot be measured"
    ]
    assert "no image of class 4" in (tmp_path / "runs" / "m" / "01_split.html").read_text()


# --------------------------------------------------------------------------- row 10
def test_a_read_only_runs_dir_gets_one_line(tmp_path, retina_path, monkeypatch, capsys):
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "runs" / "r"))

    monkeypatch.setattr(runs.Path, "mkdir", read_only)
    rc = _cli(tmp_path, "--run-name", "r", "--stage", "data")
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "Read-only file system; the folder is on a read-only file system" in err


def test_a_full_disk_never_leaves_status_ok_or_temp_files(
    tmp_path, retina_path, monkeypatch, capsys
):
    def full(src, out, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(report, "render_html", full)
    rc = _cli(tmp_path, "--run-name", "f", "--stage", "data")
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device; the disk is full" in err and "Traceback" not in err
    assert runs.RunFolder(tmp_path / "runs" / "f").stage("01_split")["status"] == "failed"
    assert not list((tmp_path / "runs").rglob("*.tmp"))


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        paths.atomic_write_text(tmp_path / "a.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_is_recorded_over_ok_when_no_new_file_fits(tmp_path, monkeypatch):
    runs.set_status(tmp_path, "01_split", "ok", html="01_split.html", seconds=3.0, warnings=[])

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paths, "atomic_write_bytes", full)
    runs.set_status(tmp_path, "01_split", "failed", error="OSError: no space")
    assert runs.status(tmp_path)["01_split"]["status"] == "failed"


# --------------------------------------------------------------------------- row 11
@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array(["0", "1"] * 20).reshape(-1, 1), "labels are <U1"),
        (np.array([0, 1] * 20, dtype=object).reshape(-1, 1), "holds Python objects"),
    ],
)
def test_string_or_object_labels_are_named_with_the_file(tmp_path, capsys, labels, match):
    f = make_npz(tmp_path / "retinamnist.npz", train_labels=labels)
    rc = _cli(tmp_path, "--data-path", f, "--set", "verify_md5=false", "--stage", "data")
    err = capsys.readouterr().err
    assert rc == 2 and match in err and str(f) in err and "Traceback" not in err


def test_a_truncated_liver_file_is_named(tmp_path):
    folder = make_liver(tmp_path / "liver", n=8)
    blob = (folder / "imgs.npy").read_bytes()
    (folder / "imgs.npy").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        datasets.DataError, match=r"imgs.npy \(UnpicklingError.*truncated or corrupt"
    ):
        datasets.load_liver("liver4", str(folder))


@pytest.mark.parametrize("content", ["utf-16", "binary", "device", "folder"])
def test_an_unreadable_params_file_is_named(tmp_path, content):
    f = tmp_path / "p.yaml"
    if content == "utf-16":
        f.write_text("epochs: 2\n", encoding="utf-16")
    elif content == "binary":
        f.write_bytes(bytes(range(256)))
    elif content == "device":
        f = Path(os.devnull)
    else:
        f.mkdir()
    with pytest.raises(ParamError, match=f"parameter file {f} is"):
        params.resolve(f)


# --------------------------------------------------------------------------- row 13
def test_a_worker_stops_when_its_sweep_is_killed(tmp_path):
    marker = tmp_path / "stopped"
    worker = (
        f"import sys, time; sys.path.insert(0, {LIB!r})\n"
        "from vitedit.sweep import dispatch\n"
        "try:\n    dispatch.die_with_parent(poll=0.1, grace=5)\n    time.sleep(60)\n"
        f"except KeyboardInterrupt:\n    open({str(marker)!r}, 'w').write('interrupted')\n"
    )
    sweep = (
        "import subprocess, sys, time\n"
        "import os\n"
        f"env = dict(os.environ, VITEDIT_PARENT_PID=str(os.getpid()))\n"
        f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True, env=env)\n"
        "print(p.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", sweep], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(
        parent.pid, signal.SIGKILL
    )  # at once: the worker may not have started watching  # kill -9 of vitedit-sweep
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and not marker.exists():
        time.sleep(0.1)
    assert marker.read_text() == "interrupted"
    deadline = time.time() + 10
    while time.time() < deadline and not _gone(child):
        time.sleep(0.1)
    assert _gone(child)  # exited (a zombie until init reaps it), not left writing


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" in status.read_text()
    except OSError:
        return True


def test_a_resumed_sweep_refuses_a_folder_a_live_worker_writes(tmp_path):
    folder = tmp_path / "runs" / "retinamnist" / "e1"
    holder = _hold(folder)
    try:
        with pytest.raises(
            sweep_spec.SweepError, match=f"still being written.*process {holder.pid}"
        ):
            sweep_run.wait_for_writers([folder], seconds=0.3, poll=0.1)
    finally:
        holder.kill()
        holder.wait()
    sweep_run.wait_for_writers([folder], seconds=0.3)  # the lock died with its process


def test_a_sweep_job_holds_its_folders_lock(tmp_path, monkeypatch):
    folder = tmp_path / "e"
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"kind": "experiment", "folder": str(folder)}))
    monkeypatch.setattr(dispatch, "die_with_parent", lambda: None)
    monkeypatch.setattr(
        dispatch, "execute_job", lambda f: 0 if (folder / runs.WRITER_FILE).is_file() else 5
    )
    assert dispatch.execute(job) == 0
    holder = _hold(folder)
    try:
        assert dispatch.execute(job) == 3
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- rows 14 and 15
@pytest.mark.parametrize(
    "args, match",
    [
        (["--set", "ft_train_ratio=0.0001"], "leaves FT-Train empty"),
        (["--set", "edit_selection=pair", "--edit-pair", "9", "9"], "two different class ids"),
        (["--set", "edit_selection=pair", "--edit-pair", "0", "0"], "two different class ids"),
        (["--set", "edit_selection=pair", "--edit-pair", "7", "9"], "outside 0..4"),
        (["--set", "trace_regions=50"], "trace_regions 50 must be between 1"),
        (["--run-name", "a\nb"], "no newline"),
        (["--run-name", "x" * 300], "300 characters long"),
        (["--run-name", ""], "must be a plain folder name"),
        (["--params", os.devnull], "not a regular file"),
    ],
)
def test_refused_in_the_preflight_before_anything_is_written(
    tmp_path, retina_path, capsys, args, match
):
    try:
        rc = _cli(tmp_path, "--stage", "locate", *args)
    except SystemExit as e:  # refused by argparse (a run name, a seed)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def test_cuda_without_cuda_is_refused_in_the_preflight(tmp_path, retina_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _cli(tmp_path, "--stage", "train", "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path, retina_path, capsys):
    (tmp_path / "ckpt").write_text("")
    assert _cli(tmp_path, "--stage", "train", "--checkpoint-dir", tmp_path / "ckpt") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_folder_named_like_the_data_file_is_refused(tmp_path, capsys):
    (tmp_path / "retinamnist.npz").mkdir()
    assert _cli(tmp_path, "--stage", "data", "--data-path", tmp_path / "retinamnist.npz") == 2
    assert "is a folder, not a .npz file" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["top", "per_dataset"])
def test_an_empty_seed_list_is_refused(tmp_path, where):
    spec = {"name": "s", "params": [TINY]}
    if where == "top":
        spec["seeds"] = []
    else:
        spec.update(datasets=["retinamnist"], per_dataset={"retinamnist": {"seeds": []}})
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    with pytest.raises(sweep_spec.SweepError, match="'seeds' is empty"):
        sweep_spec.check_spec(sweep_spec.load_spec(f))


def test_a_per_dataset_block_for_a_dataset_not_listed_is_refused(tmp_path):
    spec = {"name": "s", "params": [TINY], "datasets": ["retinamnist"]}
    spec["per_dataset"] = {"bloodmnist": {"seeds": [1]}}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    args = sweep_spec.argparse.Namespace(datasets=None, download=False, liver_dir=None)
    with pytest.raises(sweep_spec.SweepError, match=r"per_dataset: \['bloodmnist'\] not in"):
        sweep_spec.restrict_datasets(sweep_spec.load_spec(f), args)


def test_a_runner_with_no_batch_is_refused():
    from vitedit import models

    with pytest.raises(models.ModelError, match="batch_size must be a positive integer"):
        models.Runner(models.get_config("vit_tiny_test"), 0, "cpu")


def test_object_liver_labels_are_named(tmp_path):
    folder = make_liver(tmp_path / "liver", n=8)
    np.save(folder / "labs.npy", np.arange(8).astype(object), allow_pickle=True)
    with pytest.raises(datasets.DataError, match="labs.npy holds Python objects"):
        datasets.load_liver("liver4", str(folder))


def test_seeds_are_checked_before_their_parent_folder_exists(tmp_path, retina_path, capsys):
    args = ["--seeds", "1", "2", "--set", "edit_selection=pair", "--edit-pair", "9", "9"]
    assert _cli(tmp_path, "--stage", "data", *args) == 2
    assert "two different class ids" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_checks_every_grid_point_in_its_preflight(tmp_path, retina_path):
    spec = {"name": "s", "params": [TINY], "methods": ["head"], "baselines": False}
    spec["grid"] = {"ft_train_ratio": [0.9, 0.0001]}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = subprocess.run(
        [sys.executable, "-m", "vitedit.sweep", "run", str(f), "--sweep-dir", str(tmp_path / "sw")]
        + ["--data-path", str(retina_path), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "leaves FT-Train empty" in r.stderr, r.stderr[-500:]
    assert not (tmp_path / "sw" / "runs").exists()


def test_a_corrupt_status_is_replaced_when_a_stage_records(tmp_path):
    (tmp_path / "status.json").write_text("{garbage")
    assert runs.RunFolder(tmp_path).has_failure()  # read as a failure saying so
    runs.set_status(tmp_path, "01_split", "ok")
    assert runs.status(tmp_path) == {"01_split": runs.status(tmp_path)["01_split"]}


def test_a_job_run_by_hand_does_not_watch_for_a_sweep(monkeypatch):
    monkeypatch.delenv("VITEDIT_PARENT_PID", raising=False)
    assert dispatch.die_with_parent() is None


def test_writes_in_synced_at_end_are_whole_and_made_durable_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(os, "sync", lambda: calls.append("sync"))
    with paths.synced_at_end():
        with paths.synced_at_end():  # nested: one sync, by the outer block
            paths.atomic_write_text(tmp_path / "a.json", "{}")
        paths.atomic_write_text(tmp_path / "b.json", "[]")
        assert calls == []
    assert calls == ["sync"]
    assert (tmp_path / "a.json").read_text() == "{}" and (tmp_path / "b.json").read_text() == "[]"
    with pytest.raises(ValueError), paths.synced_at_end():
        raise ValueError  # a failing block still syncs what it wrote
    paths.atomic_write_text(tmp_path / "c.json", "{}")  # outside: each write its own fsync
    assert calls == ["sync", "sync", "fsync"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]
