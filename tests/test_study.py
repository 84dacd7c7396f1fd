"""Integration: the CLI runs notebooks 01-02 through papermill on the real RetinaMNIST file."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import unquote

import pandas as pd
import pytest

from vitedit import checkpoints, methods, runs

from conftest import ROOT

pytestmark = pytest.mark.integration
TINY = str(ROOT / "params" / "tiny.yaml")


def vitedit(*args, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "vitedit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory, retina_path):
    tmp = tmp_path_factory.mktemp("study")
    common = [
        "--params",
        TINY,
        "--runs-dir",
        tmp / "runs",
        "--checkpoint-dir",
        tmp / "ckpt",
        "--data-path",
        retina_path,
    ]
    # progress on (tiny.yaml turns it off): the console and the reports are checked below
    r = vitedit("--stage", "full", "--run-name", "it", *common, "--set", "progress=true")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, common, r


def test_full_run_writes_every_artifact(study):
    tmp, _, r = study
    run = tmp / "runs" / "it"
    assert f"report: {run / 'index.html'}" in r.stdout
    for f in [
        "params.yaml",
        "split_indices.npz",
        "split_meta.json",
        "data_split_info.csv",
        "training_metrics.csv",
        "checkpoint.json",
        "set_accuracy.csv",
        "status.json",
        "index.html",
        "01_split.html",
        "02_train.html",
        "notebooks/01_split.ipynb",
        "notebooks/02_train.ipynb",
        "figures/class_distribution.png",
        "figures/examples.png",
        "figures/training_curves.png",
        "03_locate.html",
        "notebooks/03_locate.ipynb",
        "layer_importance.csv",
        "layer_statistics.csv",
        "edit_layers.json",
        "locate_summary.json",
        "04_edit_alphaedit.html",
        "05_edit_head.html",
        "edit_log.csv",
        "head_edit_log.csv",
        "edit_summary.csv",
        "head_edit_summary.csv",
        *(f"edits/{m}.json" for m in methods.names()),  # every registered method, from the registry
        "06_evaluate.html",
        "07_baselines.html",
        "comparative_evaluation_edit_samples.csv",
        "comparative_evaluation_projection_samples.csv",
        "comparative_evaluation_test_set.csv",
        "comparative_evaluation_edit_discovery_set.csv",
        "confusion_matrix_orig.csv",
        "confusion_matrix_edit.csv",
        "confusion_matrix.png",
        "metrics.json",
        "baseline_retrain_summary.csv",
        "baseline_finetune_errors_summary.csv",
    ]:
        assert (run / f).is_file(), f
    p = runs.stored_params(run)
    assert (p["model"], p["epochs"], p["dataset"], p["run_dir"]) == (
        "vit_tiny_test",
        2,
        "retinamnist",
        str(run),
    )
    st = runs.status(run)
    assert all(
        st[n]["status"] == "ok"
        for n in [
            "01_split",
            "02_train",
            "03_locate",
            "04_edit_alphaedit",
            "05_edit_head",
            "06_evaluate",
            "07_baselines",
        ]
    ), st
    metrics = json.loads((run / "metrics.json").read_text())["methods"]
    assert set(metrics) == set(methods.names())
    # the preservation error on the real images' keys is recorded for every projection edit
    for m in (n for n in methods.names() if methods.get(n).uses_layers):
        assert 0 <= metrics[m]["preservation_insample"] < 10, metrics[m]
        assert 0 <= metrics[m]["preservation_heldout"] < 10, metrics[m]
    test_rows = pd.read_csv(run / "comparative_evaluation_test_set.csv")
    assert sorted(test_rows.method) == sorted(metrics) and (test_rows.total == 400).all()
    counts = pd.read_csv(run / "data_split_info.csv")
    assert counts["total"].tolist()[2:] == [120, 400] and sum(counts["total"][:2]) == 1080
    assert len(pd.read_csv(run / "training_metrics.csv")) == 2
    acc = pd.read_csv(run / "set_accuracy.csv")
    assert acc["set"].tolist() == ["FT-Train", "Edit-Discovery", "FT-Val", "Test"]
    assert acc["n"].tolist()[2:] == [120, 400]
    ref = json.loads((run / "checkpoint.json").read_text())
    assert (
        ref["path"].startswith(str(tmp / "ckpt"))
        and checkpoints.sha256_file(ref["path"]) == ref["sha256"]
    )
    html = (run / "02_train.html").read_text()
    assert "data:image/png;base64" in html and "nb.start(" not in html  # figures in, code input out
    imp = pd.read_csv(run / "layer_importance.csv")
    summary = json.loads((run / "locate_summary.json").read_text())
    assert imp["sample"].nunique() == summary["n_traced"] == min(4, summary["n_errors"])
    assert set(imp.kind) == {"block", "mlp", "attn"} and set(imp.layer) == {0, 1, 2, 3}
    assert (imp.true_label != imp.pred_label).all()
    stats = pd.read_csv(run / "layer_statistics.csv")
    assert len(stats) == 3 * 4 and set(stats.columns) >= {
        "mean",
        "ci_low",
        "ci_high",
        "rank",
        "n_used",
    }
    choice = json.loads((run / "edit_layers.json").read_text())
    assert choice["source"] in ("tracing", "default") and len(choice["layers"]) == 3
    log = pd.read_csv(run / "edit_log.csv")
    assert set(log.method) == {"alphaedit", "memit", "alphaedit_noproj"}
    assert log.groupby("method").size().tolist() == [4, 4, 4]
    assert (log.pred_before != log.true_label).all()  # only errors are edited
    edits = {
        m: json.loads((run / "edits" / f"{m}.json").read_text())
        for m in ["alphaedit", "memit", "head"]
    }
    assert (
        edits["alphaedit"]["base_sha256"] == ref["sha256"]
        and len(edits["head"]["stats_positions"]) == 64
    )
    assert (
        edits["alphaedit"]["edited_positions"] == edits["head"]["edited_positions"]
    )  # same errors for all
    for rec in edits.values():
        assert (
            rec["checkpoint"].startswith(str(run / "edited"))
            and checkpoints.sha256_file(rec["checkpoint"]) == rec["sha256"]
        )
    summary = pd.read_csv(run / "edit_summary.csv")
    n_ft = json.loads((run / "split_meta.json").read_text())["sizes"]["ft_train"]
    assert (summary.ft_insample_n == 64).all() and (summary.ft_heldout_n == n_ft - 64).all()
    index = (run / "index.html").read_text()
    assert 'href="01_split.html"' in index and 'href="02_train.html"' in index


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v is not None:
                self.refs.append((tag, k, v))


def test_every_page_of_a_run_opens_offline_and_its_links_resolve_inside_the_run(study):
    tmp, _, _ = study
    run = (tmp / "runs" / "it").resolve()
    pages = sorted(run.glob("*.html"))
    assert len(pages) == 8  # index + 01..07
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text())
        for _tag, _attr, ref in parser.refs:
            assert not ref.startswith(("http:", "https:", "//")), f"{page.name}: network {ref}"
            if ref.startswith(("data:", "#")):
                continue
            target = (page.parent / unquote(ref.split("#")[0])).resolve()
            assert target.is_relative_to(run), f"{page.name}: {ref} leaves the run folder"
            assert target.exists(), f"{page.name}: {ref} does not resolve"
        imgs = [r for t, a, r in parser.refs if t == "img"]
        assert all(r.startswith("data:image/") for r in imgs), page.name  # figures inline


def test_pages_render_in_a_real_headless_browser_without_network(study):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import browser_check

    exe = browser_check.browser()
    if exe is None:
        pytest.skip("no Chromium here (apt-get install chromium); benchmarks/browser_check.py")
    run = study[0] / "runs" / "it"
    for page in ("index.html", "06_evaluate.html"):
        assert browser_check.check_page(run / page, exe) == [], page


def test_reports_and_console_are_clean(study):
    tmp, _, r = study
    run = tmp / "runs" / "it"
    for page in sorted(run.glob("*.html")):
        text = page.read_text()
        assert "TqdmWarning" not in text and "site-packages" not in text, page.name
        assert "it/s]" not in text, page.name  # no tqdm redraws
        # progress: at most the last line of each bar (02: training; 03: tracing; 07: retraining)
        assert text.count("[progress]") <= 2, (page.name, text.count("[progress]"))
    assert "[progress] train" in r.stderr and "epoch: 2/2" in r.stderr  # per-epoch console lines
    assert "without encryption" not in r.stderr + r.stdout
    assert "index (updated after every stage)" in r.stdout
    st = runs.status(run)
    assert all("warnings" in st[n] for n in st)  # the status records each stage's warnings
    # the tiny model's edits fix almost nothing: 06 says so, in its status and the run index
    assert any("fixes almost none" in w for w in st["06_evaluate"]["warnings"])
    index = (run / "index.html").read_text()
    assert "retinamnist" in index and "vit_tiny_test" in index and "<h2>Methods</h2>" in index


def test_train_stage_again_reuses_the_checkpoint(study):
    tmp, common, _ = study
    r = vitedit("--stage", "train", "--run-name", "it", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = json.loads((tmp / "runs" / "it" / "checkpoint.json").read_text())
    assert ref["reused"] is True
    assert "[01_split]" not in r.stdout  # the split was done: only 02 ran


def test_locate_stage_with_explicit_layers(study):
    tmp, common, _ = study
    r = vitedit("--stage", "locate", "--run-name", "it", "--edit-layers", "0", "2", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[02_train]" not in r.stdout
    choice = json.loads((tmp / "runs" / "it" / "edit_layers.json").read_text())
    assert choice == {
        "layers": [0, 2],
        "source": "explicit",
        "reason": "edit_layers given in the parameters",
    }
    r = vitedit("--stage", "locate", "--run-name", "it", "--edit-layers", "0", "9", *common)
    assert r.returncode == 2 and "out of range" in r.stderr  # the tiny model has layers 0..3
    assert (
        json.loads((tmp / "runs" / "it" / "edit_layers.json").read_text()) == choice
    )  # nothing written


def test_edit_stage_head_closed_form(study):
    tmp, common, _ = study
    inherit = common[
        2:
    ]  # no --params: the run's stored parameters are the base (edit_layers [0, 2] from above)
    r = vitedit(
        "--stage", "edit", "--run-name", "it", "--edit-method", "head", "--closed-form", *inherit
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[05_edit_head]" in r.stdout and "[04_edit_alphaedit]" not in r.stdout
    log = pd.read_csv(tmp / "runs" / "it" / "head_edit_log.csv")
    assert set(log.method) == {"head_closed_form"}
    st = runs.status(tmp / "runs" / "it")
    assert st["06_evaluate"]["status"] == "stale"  # it read 05's edits
    # which methods ran is a run setting: evaluating afterwards is not refused over it
    r = vitedit("--stage", "eval", "--run-name", "it", *inherit)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[06_evaluate]" in r.stdout and "[05_edit_head]" not in r.stdout
    r = vitedit(
        "--stage", "edit", "--run-name", "it", "--edit-method", "memit", "--closed-form", *inherit
    )
    assert r.returncode == 2 and "--closed-form" in r.stderr


def test_changing_the_split_of_an_existing_run_is_refused(study):
    tmp, common, _ = study
    r = vitedit("--stage", "train", "--run-name", "it", "--seed", "7", *common)
    assert r.returncode == 2 and "seed: 42 -> 7" in r.stderr
