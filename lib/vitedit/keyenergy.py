"""Where the errors' keys lie for the null-space methods (the benchmark page's "Where the errors'
keys lie"): read from each run's edit record. Importable without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import methods


def null_space_methods() -> dict[str, str]:
    """The null-space methods and the parameter that sets their preserved subspace (registry)."""
    return {m.name: m.null_space_key for m in methods.REGISTRY.values() if m.null_space_key}


def key_energy(summary: pd.DataFrame) -> pd.DataFrame:
    """Where the edited errors' keys lie, per dataset, null-space method, threshold and edited layer.

    A null-space edit can only act on the part of a key in the range of its projection ``P`` (the
    directions the preserved keys barely use). ``error_energy_editable`` is the mean share of an
    edited error's key energy in that range (recorded by the editor as
    ``error_key_energy_outside``); ``preserved_energy_editable`` the same share for the preserved
    keys (head edits record it). ``kept_dim`` of ``dim`` directions are editable. Means over every
    finished run of the setting (seeds and L2 values: the energy depends on P and the keys only).
    """
    cols = [
        "dataset",
        "method",
        "threshold",
        "layer",
        "runs",
        "kept_dim",
        "dim",
        "error_energy_editable",
        "preserved_energy_editable",
    ]
    if not len(summary) or "run_dir" not in summary:
        return pd.DataFrame(columns=cols)
    key_of = null_space_methods()
    ok = summary[(summary.status == "ok") & summary.method.isin(list(key_of))]
    rows = []
    for _, r in ok.iterrows():
        f = Path(str(r.run_dir)) / "edits" / f"{r.method}.json"
        if not f.is_file():
            continue
        rec = json.loads(f.read_text())
        info = rec.get("info") or {}
        for layer, li in (rec.get("layer_info") or {}).items():
            err = li.get("error_key_energy_outside", info.get("error_key_energy_outside"))
            if err is None:  # recorded since the editors report it; older runs lack it
                continue
            pres = li.get("preserved_key_energy_outside", info.get("preserved_key_energy_outside"))
            rows.append(
                {
                    "dataset": r.dataset,
                    "method": r.method,
                    # the edit's own record: the summary lists only the searched parameters
                    "threshold": float(
                        (rec.get("settings") or {}).get(key_of[r.method], r.get(key_of[r.method]))
                    ),
                    "layer": layer,
                    "kept_dim": li.get("kept_dim", np.nan),
                    "dim": li.get("dim", np.nan),
                    "error_energy_editable": float(err),
                    "preserved_energy_editable": np.nan if pres is None else float(pres),
                }
            )
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    keys = ["dataset", "method", "threshold", "layer"]
    out = (
        df.groupby(keys, sort=True, dropna=False)
        .agg(
            runs=("error_energy_editable", "size"),
            kept_dim=("kept_dim", "mean"),
            dim=("dim", "first"),
            error_energy_editable=("error_energy_editable", "mean"),
            preserved_energy_editable=("preserved_energy_editable", "mean"),
        )
        .reset_index()
    )
    return out[cols]
