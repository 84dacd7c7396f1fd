"""Integration: sweeps run the real notebooks (papermill) on RetinaMNIST with the tiny config."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from vitedit import columns, report, runs, sweep

from conftest import ROOT

pytestmark = pytest.mark.integration
TINY = str(ROOT / "params" / "tiny.yaml")
DOCUMENTED = [
    "experiment",
    "method",
    "dataset",
    "status",
    "error",
    "seed",
    "config_id",
    "projection_samples",
    "nullspace_threshold",
    "num_edit_layers",
    "max_edits",
    "L2",
    "v_lr",
    "layers",
    *columns.ORIGINAL_COLUMNS,
    "val_acc_delta",
    "val_regression_rate",
    "job_seconds",
    "papermill_overhead_seconds",
    "run_dir",
    "report",
    "selected",
]


def env():
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        RAY_AUTH_MODE="disabled",
    )


def sweep_cmd(spec_file, sweep_dir, ckpt, retina_path, *extra):
    return [
        sys.executable,
        "-m",
        "vitedit.sweep",
        "run",
        str(spec_file),
        "--sweep-dir",
        str(sweep_dir),
        "--checkpoint-dir",
        str(ckpt),
        "--data-path",
        str(retina_path),
        "--no-progress",
        *map(str, extra),
    ]


def run_sweep(*args, timeout=900):
    return subprocess.run(
        sweep_cmd(*args[:4], *args[4:]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=ROOT,
    )


def write_spec(folder, name, **kw):
    f = folder / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"name": name, "params": [TINY], **kw}))
    return f


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


def seeded(sweep_dir, swept):
    """A new sweep folder holding the shared stages (split, training, locate) that ``swept`` ran:
    the tests of failure, interruption and executors need experiments, not those stages again."""
    shutil.copytree(swept[0] / "sw" / "shared", sweep_dir / "shared", symlinks=True)
    return sweep_dir


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ckpt, retina_path):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write_spec(
        tmp,
        "grid",
        methods=["alphaedit", "head_closed_form"],
        baselines=["finetune"],
        grid={"L2": [1e-4, 1e-2], "num_edit_layers": [1, 2]},
        method_grids={"finetune": {"baseline_lr": [1e-5, 1e-3]}},
    )
    r = run_sweep(
        spec, tmp / "sw", ckpt, retina_path, "--parallel", "2", "--wandb", "--wandb-tags", "test"
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, spec, r


def test_summary_has_the_documented_columns_and_every_experiment(swept):
    tmp, _, r = swept
    s = pd.read_csv(tmp / "sw" / "param_search_summary_retinamnist.csv")
    assert all(c in s.columns for c in DOCUMENTED), set(DOCUMENTED) - set(s.columns)
    assert len(s) == 7 and (s.status == "ok").all()
    assert s.method.value_counts().to_dict() == {
        "alphaedit": 4,
        "head_closed_form": 1,
        "baseline_finetune": 2,  # its own grid, crossed with nothing else
    }
    assert set(s.loc[s.method == "baseline_finetune", "baseline_lr"]) == {1e-5, 1e-3}
    a = s[s.method == "alphaedit"]
    assert set(zip(a.L2, a.num_edit_layers)) == {(1e-4, 1), (1e-4, 2), (1e-2, 1), (1e-2, 2)}
    assert (
        s.loc[s.method == "head_closed_form", "L2"].isna().all()
    )  # not a parameter of head editing
    assert (s.test_total == 400).all() and s.edit_fix_ratio.between(0, 1).all()
    assert (s.papermill_overhead_seconds > 0).all() and (
        s.job_seconds > s.papermill_overhead_seconds
    ).all()
    details = json.loads((tmp / "sw" / "param_search_details_retinamnist.json").read_text())
    assert len(details["experiments"]) == 7 and details["selection"]["metric"] == "val_acc_delta"
    assert {c["method"] for c in details["chosen"]} == {
        "alphaedit",
        "head_closed_form",
        "baseline_finetune",
    }
    sel = pd.read_csv(tmp / "sw" / "selection.csv")
    assert sel.method.is_unique and s.selected.sum() == 3


def test_training_and_statistics_run_once_for_a_grid_of_edit_settings(swept, ckpt):
    tmp, _, _ = swept
    sw = tmp / "sw"
    shared = list((sw / "shared").iterdir())
    assert len(shared) == 1 and runs.status(shared[0])["02_train"]["status"] == "ok"
    assert len(list(ckpt.glob("*.pt"))) == 1  # one fine-tuned checkpoint
    exp_dirs = sweep.experiment_folders(sw)
    assert not any((d / "notebooks" / "02_train.ipynb").exists() for d in exp_dirs)
    assert all(runs.status(d)["02_train"]["reused_from"].endswith(shared[0].name) for d in exp_dirs)
    computed, layers = 0, set()
    for d in exp_dirs:
        f = d / "edits" / "alphaedit.json"
        if f.is_file():
            rec = json.loads(f.read_text())
            layers |= set(rec["settings"]["layers"])
            computed += sum(not v["cached"] for v in rec["layer_info"].values())
    stats = list((ckpt / "stats").glob("moment_*.pt"))
    assert (
        len(stats) == len(layers) == computed
    )  # each layer's statistics computed once, then loaded


def test_rerun_skips_finished_experiments(swept, ckpt, retina_path):
    tmp, spec, _ = swept
    before = {d: (d / "status.json").read_text() for d in sweep.experiment_folders(tmp / "sw")}
    r = run_sweep(spec, tmp / "sw", ckpt, retina_path, "--no-report")
    assert r.returncode == 0 and "0 to run, 7 already done" in r.stdout, r.stdout + r.stderr
    assert before == {
        d: (d / "status.json").read_text() for d in sweep.experiment_folders(tmp / "sw")
    }


def test_collect_rebuilds_the_summary_from_run_folders(swept):
    tmp, _, _ = swept
    sw = tmp / "sw"
    old = pd.read_csv(sw / "param_search_summary_retinamnist.csv")
    for f in [
        "param_search_summary_retinamnist.csv",
        "param_search_details_retinamnist.json",
        "selection.csv",
    ]:
        (sw / f).unlink()
    assert sweep.main(["collect", str(sw), "--no-report"]) == 0
    new = pd.read_csv(sw / "param_search_summary_retinamnist.csv")
    pd.testing.assert_frame_equal(old, new)
    assert (sw / "param_search_details_retinamnist.json").is_file() and (
        sw / "selection.csv"
    ).is_file()


def test_sweep_report_is_offline_html_with_plots_and_links(swept, tmp_path):
    tmp, _, _ = swept
    sw = tmp / "sw"
    page = (sw / "index.html").read_text()
    # budget curves + Pareto + one plot per searched parameter
    assert page.count("data:image/png;base64") >= 4
    assert 'src="http' not in page and "Chosen configuration per method" in page
    assert "Fix rate at a regression budget" in page and "fix rate @ &lt;= 1%" in page
    points = pd.read_csv(sw / "budget.csv", keep_default_na=False, na_values=[""])
    assert len(points) == 3 * 2 and set(points.budget) == {0.01, 0.05}
    for d in sweep.experiment_folders(sw):
        link = os.path.relpath(d / "index.html", sw)
        assert f'href="{link}"' in page and (sw / link).is_file()
    exp = sweep.experiment_folders(sw)[0]
    run_page = (exp / "index.html").read_text()
    for stage in ("01_split", "02_train"):  # reused stages link to the shared stage folder's report
        links = re.findall(rf'href="(\.\./\.\./\.\./shared/[^"]+/{stage}\.html)"', run_page)
        assert len(links) == 1 and (exp / links[0]).resolve().is_file(), (stage, run_page)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "grid").symlink_to(sw)
    index = report.write_reports_index(tmp_path).read_text()
    assert 'href="sweeps/grid/index.html"' in index and "7 ok" in index


def test_wandb_offline_logs_the_original_metric_names(swept):
    tmp, _, _ = swept
    for d in sweep.experiment_folders(tmp / "sw"):
        files = list(d.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1, d
        blob = files[0].read_bytes()
        for name in (
            b"test/accuracy_delta",
            b"test/stability",
            b"edit/fix_rate",
            b"proj/stability",
            b"timing/edit_seconds",
        ):
            assert name in blob, (d.name, name)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without CUDA to make 'cuda' fail"
)
def test_a_failing_experiment_is_recorded_and_the_others_finish(tmp_path, ckpt, retina_path, swept):
    spec = write_spec(
        tmp_path,
        "fail",
        methods=["head_closed_form"],
        baselines=False,
        grid={"device": ["cpu", "cuda"]},
    )
    sw = seeded(tmp_path / "sw", swept)
    r = run_sweep(spec, sw, ckpt, retina_path, "--wandb", "--parallel", "2")
    assert r.returncode == 1 and "failed" in r.stdout, r.stdout + r.stderr
    (shared,) = (sw / "shared").iterdir()  # reused as it was, not run again
    assert (shared / "status.json").read_text() == (
        swept[0] / "sw" / "shared" / shared.name / "status.json"
    ).read_text()
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
    tmp_path, ckpt, retina_path, swept
):
    spec = write_spec(
        tmp_path,
        "kill",
        methods=["head_closed_form"],
        baselines=False,
        grid={"head_margin": [0.5, 1.0, 2.0]},
    )
    sw = seeded(tmp_path / "sw", swept)
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
    assert n_done < 3, "the sweep finished before it could be killed"
    r = run_sweep(spec, sw, ckpt, retina_path, "--no-report")
    assert r.returncode == 0 and f"{3 - n_done} to run, {n_done} already done" in r.stdout, (
        r.stdout + r.stderr
    )
    for d, text in done.items():
        assert (d / "status.json").read_text() == text  # not redone
    s = pd.read_csv(sw / "param_search_summary_retinamnist.csv")
    assert len(s) == 3 and (s.status == "ok").all()


def test_ray_executor_runs_two_experiments_locally(tmp_path, ckpt, retina_path, swept):
    pytest.importorskip("ray")
    spec = write_spec(
        tmp_path,
        "ray",
        methods=["head_closed_form"],
        baselines=False,
        grid={"head_margin": [0.5, 1.0]},
    )
    sw = seeded(tmp_path / "sw", swept)
    r = run_sweep(spec, sw, ckpt, retina_path, "--executor", "ray", "--no-report")
    assert r.returncode == 0 and "executor: ray" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
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
