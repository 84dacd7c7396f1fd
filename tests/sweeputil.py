"""Helpers shared by the sweep integration tests (test_sweep_run.py, test_sweep_resilience.py)."""

import os
import subprocess
import sys

import yaml

from conftest import ROOT

TINY = str(ROOT / "params" / "tiny.yaml")


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
