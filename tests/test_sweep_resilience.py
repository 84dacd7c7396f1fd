"""Integration: a sweep survives what goes wrong (a failing experiment, a kill, a dead kernel) and
runs on Ray. Apart from test_sweep_run.py so that the two files' sweeps run side by side
(pytest-xdist --dist loadfile); each test starts from the shared stages (split, training) that
this module's fixture ran once."""

import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from vitedit import columns, runs, sweep

from conftest import ROOT
from sweeputil import env, run_sweep, sweep_cmd, write_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ckpt, retina_path):
    """A one-experiment head-editing sweep: its shared stages seed the tests below."""
    tmp = tmp_path_factory.mktemp("prep")
    spec = write_spec(
        tmp, "prep", methods=["head_closed_form"], baselines=False, grid={"head_margin": [3.0]}
    )
    r = run_sweep(spec, tmp / "sw", ckpt, retina_path, "--no-report")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "sw"


def reused(sw, prepared, *outputs):
    """The seeded shared stages were reused as they were: nothing of them ran again."""
    (shared,) = (sw / "shared").iterdir()
    same = (shared / "status.json").read_text() == (
        prepared / "shared" / shared.name / "status.json"
    ).read_text()
    return same and not any("shared stages:" in out for out in outputs)


def seeded(sweep_dir, prepared):
    """A new sweep folder holding the shared stages (split, training) that ``prepared`` ran: the
    tests of failure, interruption and executors need experiments, not those stages again."""
    shutil.copytree(prepared / "shared", sweep_dir / "shared", symlinks=True)
    return sweep_dir


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without CUDA to make 'cuda' fail"
)
def test_a_failing_experiment_is_recorded_and_the_others_finish(
    tmp_path, ckpt, retina_path, prepared
):
    spec = write_spec(
        tmp_path,
        "fail",
        methods=["head_closed_form"],
        baselines=False,
        grid={"device": ["cpu", "cuda"]},
    )
    sw = seeded(tmp_path / "sw", prepared)
    r = run_sweep(spec, sw, ckpt, retina_path, "--wandb", "--parallel", "2")
    assert r.returncode == 1 and "failed" in r.stdout, r.stdout + r.stderr
    assert reused(sw, prepared, r.stdout)
    s = pd.read_csv(tmp_path / "sw" / "param_search_summary_retinamnist.csv").set_index(
        "experiment"
    )
    assert s.status.value_counts().to_dict() == {"ok": 1, "failed": 1}
    bad = s[s.status == "failed"]
    assert bad.error.str.contains("CUDA is not available").all()
    assert (
        bad[columns.ORIGINAL_COLUMNS[2:]].isna().all().all()
    )  # never 0 for a metric that does not exist
    for name in bad.index:
        d = tmp_path / "sw" / "runs" / "retinamnist" / name
        st = runs.status(d)
        failed = [k for k, v in st.items() if v["status"] == "failed"]
        assert (
            failed
            and st[failed[0]]["notebook"].endswith(".ipynb")
            and (d / st[failed[0]]["html"]).is_file()
        )
        blob = next(d.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
        assert b"test/accuracy_delta" not in blob and b"failed" in blob
    assert "no failed experiment" not in (tmp_path / "sw" / "index.html").read_text()


def test_a_killed_sweep_resumes_without_redoing_finished_experiments(
    tmp_path, ckpt, retina_path, prepared
):
    spec = write_spec(
        tmp_path,
        "kill",
        methods=["head_closed_form"],
        baselines=False,
        grid={"head_margin": [0.5, 1.0]},
    )
    sw = seeded(tmp_path / "sw", prepared)
    # one worker (the default): the second experiment starts only after the first is done, and
    # takes two notebooks (> 10 s) against the 1 s poll below, so the kill lands before it ends
    proc = subprocess.Popen(
        sweep_cmd(spec, sw, ckpt, retina_path, "--no-report"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    deadline = time.time() + 600
    done: dict = {}
    while time.time() < deadline and not done:
        time.sleep(1)
        done = {
            d: (d / "status.json").read_text()
            for d in (sw / "runs").glob("*/*")
            if (d / "job.json").is_file()
            and runs.RunFolder(d).state(runs.RunFolder(d).job()["notebooks"]) == "ok"
        }
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert done and proc.returncode == 130, out[-3000:]
    assert not any(
        v.get("status") == "running"
        for d in (sw / "runs").glob("*/*")
        for v in runs.status(d).values()
    )
    n_done = len(
        [
            d
            for d in sweep.experiment_folders(sw)
            if runs.RunFolder(d).state(runs.RunFolder(d).job()["notebooks"]) == "ok"
        ]
    )
    assert n_done < 2, "the sweep finished before it could be killed"
    r = run_sweep(spec, sw, ckpt, retina_path, "--no-report")
    assert r.returncode == 0 and f"{2 - n_done} to run, {n_done} already done" in r.stdout, (
        r.stdout + r.stderr
    )
    assert reused(sw, prepared, out, r.stdout)
    for d, text in done.items():
        assert (d / "status.json").read_text() == text  # not redone
    s = pd.read_csv(sw / "param_search_summary_retinamnist.csv")
    assert len(s) == 2 and (s.status == "ok").all()


def test_ray_executor_runs_two_experiments_locally(tmp_path, ckpt, retina_path, prepared):
    pytest.importorskip("ray")
    spec = write_spec(
        tmp_path,
        "ray",
        methods=["head_closed_form"],
        baselines=False,
        grid={"head_margin": [0.5, 1.0]},
    )
    sw = seeded(tmp_path / "sw", prepared)
    r = run_sweep(spec, sw, ckpt, retina_path, "--executor", "ray", "--no-report")
    assert r.returncode == 0 and "executor: ray" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert reused(sw, prepared, r.stdout)
    s = pd.read_csv(tmp_path / "sw" / "param_search_summary_retinamnist.csv")
    assert len(s) == 2 and (s.status == "ok").all() and set(s.head_margin) == {0.5, 1.0}


def test_a_dead_kernel_is_recorded_with_its_notebook(tmp_path):
    """A kernel that dies mid-notebook (here: os._exit in a cell) fails the job with the error and
    the executed notebook recorded; nothing is left 'running' or 'ok'."""
    import nbformat

    home = tmp_path / "home"
    (home / "notebooks").mkdir(parents=True)
    cell = nbformat.v4.new_code_cell("run_dir = None")
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell("import os\nos._exit(1)")])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, home / "notebooks" / "05_edit_head.ipynb")
    folder = tmp_path / "exp"
    job = sweep.write_job(
        folder,
        sweep.job_blob(
            "prep", folder, {"dataset": "retinamnist", "progress": False}, ["05_edit_head"]
        ),
    )
    r = subprocess.run(
        [sys.executable, "-m", "vitedit.sweep", "exec", str(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(env(), VITEDIT_HOME=str(home)),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    st = runs.status(folder)["05_edit_head"]
    assert (
        st["status"] == "failed"
        and "DeadKernel" in st["error"]
        and st["notebook"].endswith("05_edit_head.ipynb")
    )
    assert runs.RunFolder(folder).state(["05_edit_head"]) == "failed"
