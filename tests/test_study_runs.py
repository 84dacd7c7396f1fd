"""Integration: the CLI on its own runs (not the shared study run of test_study.py, so that the two
files run side by side under pytest-xdist): bad input refused before anything is written, a failing
notebook recorded, liver data and several seeds through the study."""

import json

import pandas as pd
import pytest
from test_study import TINY, vitedit

from vitedit import runs

from conftest import ROOT, make_liver, make_npz

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--set", "epochz=3"], "unknown parameter 'epochz'"),
        (["--epochs", "0"], "epochs"),
        (["--dataset", "nosuchmnist"], "Known datasets"),
        (["--dataset", "liver4"], "needs data_path"),
        (["--model", "resnet9"], "unknown model config"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path, retina_path, extra, match):
    args = [
        "--params",
        TINY,
        "--runs-dir",
        tmp_path / "runs",
        "--checkpoint-dir",
        tmp_path / "ckpt",
    ]
    if "--dataset" not in extra:
        args += ["--data-path", retina_path]
    r = vitedit("--stage", "full", *args, *extra)
    assert r.returncode == 2 and match in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()


def test_corrupt_data_file_fails_before_anything_is_written(tmp_path):
    f = make_npz(tmp_path / "data" / "retinamnist.npz")
    r = vitedit(
        "--stage", "data", "--params", TINY, "--runs-dir", tmp_path / "runs", "--data-path", f
    )
    assert r.returncode == 2 and "MD5" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_failing_notebook_is_recorded_as_failed(tmp_path, retina_path):
    # the tiny config has no pretrained weights anywhere: 02 must fail, loudly
    r = vitedit(
        "--stage",
        "full",
        "--params",
        TINY,
        "--runs-dir",
        tmp_path / "runs",
        "--checkpoint-dir",
        tmp_path / "ckpt",
        "--data-path",
        retina_path,
        "--run-name",
        "bad",
        "--set",
        "pretrained=true",
    )
    assert r.returncode == 1
    st = runs.status(tmp_path / "runs" / "bad")
    assert st["01_split"]["status"] == "ok"
    assert st["02_train"]["status"] == "failed" and "ModelError" in st["02_train"]["error"]
    assert (tmp_path / "runs" / "bad" / "02_train.html").is_file()
    assert not (tmp_path / "runs" / "bad" / "checkpoint.json").exists()
    assert "failed" in (tmp_path / "runs" / "bad" / "index.html").read_text()


def test_papermill_directly_refuses_unknown_parameters(tmp_path):
    import papermill as pm

    run = tmp_path / "run"
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'sede'"):
        pm.execute_notebook(
            str(ROOT / "notebooks" / "01_split.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"sede": 1, "run_dir": str(run)},
            cwd=str(ROOT / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
    assert not run.exists()


def test_liver_data_runs_through_the_study(tmp_path):
    folder = make_liver(tmp_path / "liver", n=40)
    r = vitedit(
        "--stage",
        "full",
        "--params",
        TINY,
        "--dataset",
        "liver2s",
        "--data-path",
        folder,
        "--runs-dir",
        tmp_path / "runs",
        "--checkpoint-dir",
        tmp_path / "ckpt",
        "--run-name",
        "liver",
        "--set",  # one method of each editing notebook: the data format is what is tested here
        "methods=[alphaedit,head_closed_form,baseline_finetune]",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    st = runs.status(tmp_path / "runs" / "liver")
    assert len(st) == 7 and all(v["status"] == "ok" for v in st.values()), st
    metrics = json.loads((tmp_path / "runs" / "liver" / "metrics.json").read_text())["methods"]
    assert set(metrics) == {"alphaedit", "head_closed_form", "baseline_finetune"}
    counts = pd.read_csv(tmp_path / "runs" / "liver" / "data_split_info.csv")
    assert counts["total"].sum() == 40 and list(counts.columns[2:4]) == [
        "class_0_F0-F2",
        "class_1_F3-F4",
    ]


def test_several_seeds_make_one_run_each(tmp_path, retina_path):
    r = vitedit(
        "--stage",
        "data",
        "--params",
        TINY,
        "--runs-dir",
        tmp_path,
        "--run-name",
        "multi",
        "--data-path",
        retina_path,
        "--seeds",
        "1",
        "2",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    digests = {
        json.loads((tmp_path / "multi" / f"seed-{s}" / "split_meta.json").read_text())["digest"]
        for s in (1, 2)
    }
    assert len(digests) == 2  # another seed, another split
    assert 'href="seed-1/index.html"' in (tmp_path / "multi" / "index.html").read_text()
    assert (tmp_path / "multi" / "seeds_summary.csv").is_file()
