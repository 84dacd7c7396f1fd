"""Proof by doing: the README's walk-through adds a method to a copy of the repository (one editor
module, one ``register(...)``, its test) and the new method runs through notebooks 05 and 06 in a
sweep, is in the benchmark's plan with its strength grid, and passes the registry's tests."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from sweeputil import env

COPIED = ("lib", "notebooks", "params", "tests", "pyproject.toml", "README.md")
STEP = re.compile(r"<!-- walkthrough: (write|append) (\S+) -->\n```python\n(.*?)```", re.S)


def walkthrough() -> list[tuple[str, str, str]]:
    """The README's walk-through: (action, path, code) per block."""
    return STEP.findall((ROOT / "README.md").read_text())


def test_the_readme_walkthrough_is_one_editor_module_one_registration_and_its_test():
    steps = walkthrough()
    assert [(a, p) for a, p, _ in steps] == [
        ("write", "lib/vitedit/editors/head_bias.py"),
        ("append", "lib/vitedit/methods.py"),
        ("write", "tests/test_head_bias.py"),
    ]
    assert steps[1][2].count("register(") == 1


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the repository with the walk-through applied."""
    root = tmp_path_factory.mktemp("repo")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy(src, root / name)
    for action, path, code in walkthrough():
        f = root / path
        assert action == "write" or f.is_file()
        f.write_text(f.read_text() + "\n\n" + code if action == "append" else code)
    return root


def run(repo, *args, timeout=600, **extra_env):
    """A command in the copy: its library first on the path, its notebooks and parameters."""
    e = dict(env(), PYTHONPATH=str(repo / "lib"), VITEDIT_HOME=str(repo), **extra_env)
    r = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=repo, env=e, timeout=timeout
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def test_the_new_method_passes_its_test_and_the_registrys(repo):
    r = run(
        repo,
        "-m",
        "pytest",
        "-v",
        "-p",
        "no:cacheprovider",
        "tests/test_head_bias.py",
        "tests/test_methods.py",
        "-k",
        "head_bias or belongs or reads_the_registry or one_registration",
    )
    assert re.search(r"\b(\d+) passed", r.stdout) and "failed" not in r.stdout
    # every registered method's parametrised tests ran for it too
    assert (
        "test_every_registered_method_runs_through_the_editor_interface[head_bias] PASSED"
        in r.stdout
    )


def test_the_new_method_runs_through_05_06_and_a_sweep(repo, tmp_path, retina_path):
    spec = repo / "params" / "sweeps" / "new_method.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "new_method",
                "params": ["../base.yaml", "../tiny.yaml"],
                "set": {"num_threads": 1},
                "seeds": [42],
                "methods": ["head_bias"],
                "baselines": False,
            }
        )
    )
    sweep_dir = tmp_path / "sweep"
    run(
        repo,
        "-m",
        "vitedit.sweep",
        "run",
        str(spec),
        "--sweep-dir",
        str(sweep_dir),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--data-path",
        str(retina_path),
        "--no-progress",
    )
    (summary,) = sweep_dir.glob("param_search_summary_*.csv")
    rows = pd.read_csv(summary)
    assert list(rows.method) == ["head_bias"] and list(rows.status) == ["ok"]
    (run_dir,) = {p.parent for p in sweep_dir.glob("runs/**/metrics.json")}
    status = json.loads((run_dir / "status.json").read_text())
    assert status["05_edit_head"]["status"] == status["06_evaluate"]["status"] == "ok"
    metrics = json.loads((run_dir / "metrics.json").read_text())["methods"]
    assert list(metrics) == ["head_bias"] and metrics["head_bias"]["edit_total_wrong"] > 0
    rec = json.loads((run_dir / "edits" / "head_bias.json").read_text())
    assert rec["method"] == "head_bias" and rec["settings"]["head_margin"] == 0.5


def test_the_new_method_is_in_the_benchmarks_plan_with_its_grid(repo, retina_path):
    out = run(
        repo,
        "-m",
        "vitedit.sweep",
        "run",
        "params/sweeps/benchmark.yaml",
        "--dry-run",
        "--datasets",
        "retinamnist",
        "--grid",
        "edit_selection=[first]",
        "--seeds",
        "42",
        VITEDIT_DATA_ROOT=str(retina_path.parent),
    ).stdout
    planned = [line for line in out.splitlines() if "head_bias" in line]
    assert len(planned) == 3, out[-2000:]  # head_margin 0.5, 1 and 3
