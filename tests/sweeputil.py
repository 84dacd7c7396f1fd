"""Helpers shared by the sweep tests (test_sweep_run.py, test_sweep_resilience.py) and the
evidence tests (a summary row: test_benchmark.py, test_publish.py)."""

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


def evidence_row(method: str, seed: int, fixed: int, n: int = 20, **extra) -> dict:
    """One experiment's summary row with the counts vitedit.evidence reads: ``fixed`` of ``n``
    edited errors (the first ones), one setting per method, FT-Val regression 0, a 1000-sample Test
    with 900 right before; ``extra`` overrides or adds columns."""
    return {
        "method": method,
        "config_id": method + "1",
        "seed": seed,
        "status": "ok",
        "index": 0,
        "edit_fix_ratio": fixed / n,
        "edit_num_fixed": fixed,
        "edit_total_wrong": n,
        "edit_fixed_mask": "y" * fixed + "n" * (n - fixed),
        "val_regression_rate": 0.0,
        "test_total": 1000,
        "test_correct_before": 900,
        **extra,
    }
