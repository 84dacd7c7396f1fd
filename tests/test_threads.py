"""``num_threads`` reaches every thread pool of the processes a run starts (issue 26, item 3)."""

import json
import os

import nbformat
import pytest

from vitedit import execute, threads


def test_the_environment_names_every_pool_and_none_means_torchs_choice():
    assert threads.environment(None) == {}
    env = threads.environment(1)
    assert set(env) == set(threads.POOL_VARIABLES) and set(env.values()) == {"1"}
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"} <= set(env)


def test_exported_sets_the_pools_for_children_and_restores_the_old_values(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with threads.exported(1):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(KeyError), threads.exported(2):
        raise KeyError("the old values come back after an error too")
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_apply_sets_torchs_pool_in_this_process(monkeypatch):
    import torch

    before = torch.get_num_threads()
    for k in threads.POOL_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    try:
        threads.apply(1)
        assert torch.get_num_threads() == threads.in_use() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_a_kernel_started_for_a_stage_has_num_threads_in_every_pool(tmp_path, monkeypatch):
    """A kernel (as papermill starts one for every stage) with its pools sized before torch loads;
    the parent's own settings (2 threads here) do not leak into it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    src = tmp_path / "probe.ipynb"
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    book.cells = [
        nbformat.v4.new_code_cell("n = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import json, os, torch\n"
            "print(json.dumps({'torch': torch.get_num_threads(),"
            f" 'env': {{k: os.environ.get(k) for k in {threads.POOL_VARIABLES!r}}}}}))"
        ),
    ]
    nbformat.write(book, src)
    out = tmp_path / "out.ipynb"
    execute.papermill(src, out, {"n": 1}, num_threads=1)
    seen = json.loads(nbformat.read(out, 4).cells[-1].outputs[0]["text"])
    assert seen["torch"] == 1 and set(seen["env"].values()) == {"1"}, seen
    assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ
