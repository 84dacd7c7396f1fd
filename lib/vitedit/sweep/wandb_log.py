"""Weights & Biases logging of a sweep's experiments (the original system's metric names)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .collect import summary_row
from .plan import relevant_keys

WANDB_METRICS = {
    "test/accuracy_delta": "test_acc_delta",
    "test/stability": "test_stability",
    "edit/fix_rate": "edit_fix_ratio",
    "proj/stability": "proj_stability",
    "timing/edit_seconds": "edit_time_seconds",
    "test/accuracy_before": "test_acc_before",
    "test/accuracy_after": "test_acc_after",
    "edit/num_fixed": "edit_num_fixed",
    "proj/regression_rate": "proj_regression_rate",
    "val/accuracy_delta": "val_acc_delta",
    "val/regression_rate": "val_regression_rate",
    "timing/duration_seconds": "duration_seconds",
}


def wandb_payload(row: Mapping[str, Any]) -> dict:
    """The original's metric names from one summary row; a missing or undefined metric is left out
    (never logged as 0)."""
    out = {}
    for name, col in WANDB_METRICS.items():
        v = row.get(col)
        if v is None or isinstance(v, bool):
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[name] = v
    return out


def log_experiment(job: dict, folder: Path) -> None:
    cfg = job["wandb"]
    try:
        import wandb  # lazy: an optional dependency (the ``wandb`` extra), needed with --wandb only

        row = summary_row(folder)
        run = wandb.init(
            project=cfg.get("project") or "vit-model-editing",
            entity=cfg.get("entity"),
            tags=cfg.get("tags") or None,
            group=job.get("sweep"),
            name=job.get("name"),
            job_type=job.get("method"),
            dir=str(folder),
            reinit=True,
            config={
                "method": job.get("method"),
                **{k: job["params"].get(k) for k in relevant_keys(job["method"])},
            },
        )
        payload = wandb_payload(row)
        if payload:
            run.log(payload)
        run.summary["status"] = row["status"]
        if row.get("error"):
            run.summary["error"] = str(row["error"])[:500]
        run.finish(exit_code=0 if row["status"] in ("ok", "skipped") else 1)
    except Exception as e:  # logging must never turn a finished experiment into a failure
        print(f"warning: W&B logging failed: {type(e).__name__}: {e}", file=sys.stderr)
