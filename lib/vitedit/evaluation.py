"""Evaluation of a model on the sets of the 4-set protocol."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import models
from .datasets import Data
from .splits import SET_LABEL, SETS, Split


def predictions(model, data: Data, split: Split, name: str, cfg: models.ModelConfig, batch_size: int = 256,
                device="cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, predicted labels, probabilities) of ``model`` on set ``name``."""
    logits = models.predict_logits(model, split.images(data, name), cfg, batch_size, device, progress,
                                   desc=SET_LABEL[name])
    probs = torch.softmax(logits, 1).numpy()
    return split.labels(data, name), probs.argmax(1), probs


def set_accuracy_table(model, data: Data, split: Split, cfg: models.ModelConfig, batch_size: int = 256,
                       device="cpu", progress: bool = False, sets=SETS) -> pd.DataFrame:
    """Accuracy, errors and mean true-class probability per set."""
    rows = []
    for name in sets:
        y, pred, probs = predictions(model, data, split, name, cfg, batch_size, device, progress)
        rows.append({"set": SET_LABEL[name], "n": int(len(y)), "accuracy": float((pred == y).mean()) if len(y) else np.nan,
                     "errors": int((pred != y).sum()),
                     "mean_p_true": float(probs[np.arange(len(y)), y].mean()) if len(y) else np.nan})
    return pd.DataFrame(rows)
