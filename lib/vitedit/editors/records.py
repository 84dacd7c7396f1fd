"""What notebooks 04 and 05 keep of an edit in the run folder (the edited checkpoint and
``edits/<method>.json``), how a later stage loads it back, and the tables and warnings they show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import checkpoints, models, paths
from ..columns import PRESERVATION_BOUND
from ..params import digest
from .base import EditData, EditError, EditResult

EDITS_DIR = "edits"


def save_edited(run_dir: Path, result: EditResult, base_sha256: str, settings: dict) -> Path:
    """``<run>/edited/<method>_<hash>.pt``: the hash covers the base checkpoint and the settings."""
    key = {"base": base_sha256, "method": result.info["method"], "settings": settings}
    path = Path(run_dir) / "edited" / f"{result.info['method']}_{digest(key)}.pt"
    models.save_atomic(
        {
            "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
            "key": key,
            "info": {k: v for k, v in result.info.items() if k != "layer_info"},
        },
        path,
    )
    return path


def record(
    run_dir: Path, result: EditResult, base_ref: dict, settings: dict, data: EditData
) -> dict:
    """Save the edited checkpoint in the run folder and ``edits/<method>.json`` describing it:
    the base checkpoint (sha256), settings, info, which FT-Train samples built the statistics and
    which Edit-Discovery samples were edited (evaluation holds the rest out). An edited model
    with a non-finite weight is refused before anything is written (every editor and baseline
    records through here)."""
    check_finite(result.model, result.info["method"], settings)
    ckpt = save_edited(run_dir, result, base_ref["sha256"], settings)
    rec = {
        "method": result.info["method"],
        "checkpoint": str(ckpt),
        "sha256": paths.file_hash(ckpt),
        "base_checkpoint": base_ref["path"],
        "base_sha256": base_ref["sha256"],
        "settings": settings,
        "info": {k: v for k, v in result.info.items() if k != "layer_info"},
        "layer_info": {
            k: {kk: vv for kk, vv in v.items() if kk != "eigenvalues"}
            for k, v in result.info.get("layer_info", {}).items()
        },
        "stats_positions": np.asarray(data.stats_positions).tolist(),
        "edited_positions": np.asarray(data.positions).tolist(),
    }
    paths.atomic_write_text(
        Path(run_dir) / EDITS_DIR / f"{result.info['method']}.json",
        paths.json_text(rec, default=float),
    )
    return rec


def check_finite(model, method: str, settings: dict) -> None:
    """Refuse an edited model whose weights hold inf or NaN, naming the tensors and the settings
    that made it (a step or strength too large for this model: lower it)."""
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if isinstance(v, int | float))
        raise EditError(
            f"{method}: the edit made non-finite weights ({', '.join(bad[:3])}); nothing was saved. "
            f"A setting is too large for this model; lower its strength or step ({shown})"
        )


def load_edited(run_dir: Path, method: str, device="cpu") -> tuple[torch.nn.Module, dict]:
    """An edited model of this run, verified against its record (sha256 of the file)."""
    f = Path(run_dir) / EDITS_DIR / f"{method}.json"
    if not f.is_file():
        raise EditError(f"{f} not found: run the edit stage for method '{method}' first")
    rec = json.loads(f.read_text())
    if paths.file_hash(rec["checkpoint"]) != rec["sha256"]:
        raise EditError(
            f"{rec['checkpoint']} differs from the edited checkpoint recorded for {method}"
        )
    model, _ = checkpoints.load_run_model(run_dir, device=device)
    blob = torch.load(rec["checkpoint"], map_location=device, weights_only=False)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), rec


def list_edits(run_dir: Path, kinds=None) -> dict[str, dict]:
    """The edit records of a run (``edits/<method>.json``), optionally only the given methods."""
    out = {}
    for f in sorted((Path(run_dir) / EDITS_DIR).glob("*.json")):
        rec = json.loads(f.read_text())
        if rec.get("status") == "skipped" or (kinds is not None and rec["method"] not in kinds):
            continue
        out[rec["method"]] = rec
    return out


def record_skipped(run_dir: Path, method: str, reason: str) -> None:
    """A method that could not run: recorded as skipped with its reason (never as a success)."""
    paths.atomic_write_text(
        Path(run_dir) / EDITS_DIR / f"{method}.json",
        json.dumps({"method": method, "status": "skipped", "reason": reason}, indent=2),
    )


def preservation_warnings(results: dict[str, EditResult]) -> list[str]:
    """In words: every edit whose median preservation error exceeds :data:`PRESERVATION_BOUND`, and
    every edited layer whose null space is empty (the edit cannot change it)."""
    out = []
    for method, res in results.items():
        if "null space is empty" in str(res.info.get("message", "")):
            out.append(f"{method}: {res.info['message']}")
        pres = res.info.get("preservation") or {}
        if pres.get("exceeds_bound"):
            out.append(
                f"{method}: median ||dW k|| / ||W k|| reaches {pres['insample_median_max']:.3g} "
                f"(statistics keys) / {pres['heldout_median_max']:.3g} (held-out FT-Train keys), "
                f"above the bound {PRESERVATION_BOUND:g}: the edit moves the outputs it should "
                f"preserve"
            )
    return out


def update_table(results: dict[str, EditResult]) -> pd.DataFrame:
    """Per method and edited (layer, module): kept null-space dimension, update norms and the
    preservation error ‖ΔW k‖ / ‖W k‖ on the statistics keys and on held-out FT-Train keys."""
    rows = []
    for method, res in results.items():
        for target, v in res.info.get("layer_info", {}).items():
            rows.append(
                {
                    "method": method,
                    "target": target,
                    "kept_dim": v.get("kept_dim"),
                    "dim": v.get("dim"),
                    "update_norm": v.get("update_norm"),
                    "weight_norm": v.get("weight_norm"),
                    "relative_update": (v.get("update_norm") or 0) / v["weight_norm"]
                    if v.get("weight_norm")
                    else np.nan,
                    "stats_cached": v.get("cached"),
                    **{
                        f"preservation_{w}_{stat}": v.get(f"preservation_{w}_{stat}")
                        for w in ("insample", "heldout")
                        for stat in ("median", "p95", "max")
                    },
                }
            )
    return pd.DataFrame(rows)
