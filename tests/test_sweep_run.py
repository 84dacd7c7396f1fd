"""Integration: sweeps run the real notebooks (papermill) on RetinaMNIST with the tiny config."""

import json
import os
import re

import pandas as pd
import pytest
import yaml

from vitedit import columns, report, runs, sweep

from sweeputil import run_sweep, write_spec

pytestmark = pytest.mark.integration
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


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ckpt, retina_path):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write_spec(
        tmp,
        "grid",
        methods=["alphaedit", "head_closed_form"],
        baselines=["finetune"],
        grid={"num_edit_layers": [1, 2]},  # crossing grids: test_sweep.py (no run)
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
    assert len(s) == 5 and (s.status == "ok").all()
    assert s.method.value_counts().to_dict() == {
        "alphaedit": 2,
        "head_closed_form": 1,
        "baseline_finetune": 2,  # its own grid, crossed with nothing else
    }
    assert set(s.loc[s.method == "baseline_finetune", "baseline_lr"]) == {1e-5, 1e-3}
    a = s[s.method == "alphaedit"]
    assert set(a.num_edit_layers) == {1, 2} and a.L2.notna().all()
    assert (
        s.loc[s.method == "head_closed_form", "L2"].isna().all()
    )  # not a parameter of head editing
    assert (s.test_total == 400).all() and s.edit_fix_ratio.between(0, 1).all()
    assert (s.papermill_overhead_seconds > 0).all() and (
        s.job_seconds > s.papermill_overhead_seconds
    ).all()
    details = json.loads((tmp / "sw" / "param_search_details_retinamnist.json").read_text())
    assert len(details["experiments"]) == 5 and details["selection"]["metric"] == "val_acc_delta"
    assert {c["method"] for c in details["chosen"]} == {
        "alphaedit",
        "head_closed_form",
        "baseline_finetune",
    }
    sel = pd.read_csv(tmp / "sw" / "selection.csv")
    assert sel.method.is_unique and s.selected.sum() == 3


# what differs between any two runs of the same experiment: where it ran and how long it took
RUN_COLUMNS = ("job_seconds", "papermill_overhead_seconds", "run_dir", "report", "wall_seconds")


def test_the_in_process_path_gives_the_same_summary_as_the_notebooks(swept, ckpt, retina_path):
    """The benchmark's fast path (one process per dataset x seed, no notebooks; issue 26): every
    figure of every experiment as the notebooks compute it, from the same shared checkpoint."""
    tmp, spec, _ = swept
    fast = tmp / "fast"
    fast.mkdir()
    blob = yaml.safe_load(spec.read_text())
    fast_spec = write_spec(fast, blob.pop("name"), **{**blob, "in_process": True})
    r = run_sweep(fast_spec, fast / "sw", ckpt, retina_path, "--no-report")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    slow = pd.read_csv(tmp / "sw" / "param_search_summary_retinamnist.csv")
    got = pd.read_csv(fast / "sw" / "param_search_summary_retinamnist.csv")
    assert list(got.columns) == list(slow.columns) and len(got) == len(slow) == 5
    keep = [c for c in slow.columns if c not in RUN_COLUMNS and "seconds" not in c]
    key = ["method", "config_id"]
    pd.testing.assert_frame_equal(
        got[keep].sort_values(key).reset_index(drop=True),
        slow[keep].sort_values(key).reset_index(drop=True),
        check_exact=True,
    )
    one = next(
        d
        for d in sweep.experiment_folders(fast / "sw")
        if (d / "edits" / "alphaedit.json").is_file()
    )
    st = runs.status(one)
    assert st["04_edit_alphaedit"]["fast_path"] and st["06_evaluate"]["status"] == "ok"


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
    assert r.returncode == 0 and "0 to run, 5 already done" in r.stdout, r.stdout + r.stderr
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
    assert 'href="sweeps/grid/index.html"' in index and "5 ok" in index


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
