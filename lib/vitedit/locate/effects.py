"""From the tracer's probabilities to ``layer_importance.csv``: the indirect and total effects of
every restoration, for every traced error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..models import Runner
from ..progress import bar as progress_bar
from .restorations import Restoration
from .tracing import trace_sample

IMPORTANCE_COLUMNS = [
    "sample",
    "official_index",
    "true_label",
    "pred_label",
    "layer",
    "layers",
    "kind",
    "scope",
    "p_clean",
    "p_corrupted",
    "p_restored",
    "ie",
    "te",
    "te_valid",
    "norm_effect",
    "p_true_clean",
    "p_true_corrupted",
    "p_true_restored",
    "ie_true",
]


def effects_table(
    result: Mapping[str, torch.Tensor],
    restores: Sequence[Restoration],
    pred: int,
    true: int,
    min_total_effect: float,
) -> pd.DataFrame:
    """One row per restoration: probabilities of the predicted and the true class, IE, TE, IE/TE."""
    pc, px, pr = result["clean"], result["corrupted"], result["restored"]
    te = float(pc[pred] - px[pred])
    valid = abs(te) >= min_total_effect
    rows = []
    for r, p in zip(restores, pr):
        ie = float(p[pred] - px[pred])
        rows.append(
            {
                "true_label": true,
                "pred_label": pred,
                "layer": r.layer,
                "layers": " ".join(map(str, r.layers)),
                "kind": r.kind,
                "scope": r.scope,
                "p_clean": float(pc[pred]),
                "p_corrupted": float(px[pred]),
                "p_restored": float(p[pred]),
                "ie": ie,
                "te": te,
                "te_valid": valid,
                "norm_effect": ie / te if valid else np.nan,
                "p_true_clean": float(pc[true]),
                "p_true_corrupted": float(px[true]),
                "p_true_restored": float(p[true]),
                "ie_true": float(p[true] - px[true]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the whole stage
@dataclass(frozen=True)
class Traced:
    """The samples to trace: a set's images, true labels and the model's predictions, the
    positions of the traced ones, and (optionally) every sample's official-split index."""

    images: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    positions: np.ndarray
    official_index: np.ndarray | None = None


@dataclass(frozen=True)
class TraceSetup:
    """How every sample is traced: the restorations, the noisy copies of the patch embeddings,
    the smallest total effect that normalises IE, and the rows per batched forward pass."""

    restores: Sequence[Restoration]
    noise: torch.Tensor
    min_total_effect: float
    max_rows: int


def trace_errors(
    model, runner: Runner, samples: Traced, setup: TraceSetup, progress: bool = False
) -> pd.DataFrame:
    """Trace every sample of ``samples``; the long table of ``layer_importance.csv``."""
    tables = []
    for pos in progress_bar(samples.positions, desc="causal tracing: error", disable=not progress):
        x = runner.inputs(samples.images[pos : pos + 1])
        res = trace_sample(model, x, setup.restores, setup.noise, setup.max_rows)
        t = effects_table(
            res,
            setup.restores,
            int(samples.preds[pos]),
            int(samples.labels[pos]),
            setup.min_total_effect,
        )
        t.insert(0, "sample", int(pos))
        index = samples.official_index
        t.insert(1, "official_index", int(index[pos]) if index is not None else int(pos))
        tables.append(t)
    if not tables:
        return pd.DataFrame(columns=IMPORTANCE_COLUMNS)
    return pd.concat(tables, ignore_index=True)[IMPORTANCE_COLUMNS]
