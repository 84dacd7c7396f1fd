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


def transitions(y: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray) -> dict:
    """Correct/wrong transitions between two models on the same samples.

    stability = share of samples correct before that stay correct; regression_rate = 1 - stability;
    fix_rate = share of samples wrong before that become correct.
    """
    y, b, a = map(np.asarray, (y, pred_before, pred_after))
    cb, ca = b == y, a == y
    n_cb, n_wb = int(cb.sum()), int((~cb).sum())
    return {"n": int(len(y)), "acc_before": float(cb.mean()) if len(y) else np.nan,
            "acc_after": float(ca.mean()) if len(y) else np.nan,
            "correct_to_wrong": int((cb & ~ca).sum()), "wrong_to_correct": int((~cb & ca).sum()),
            "stability": float((cb & ca).sum() / n_cb) if n_cb else np.nan,
            "regression_rate": float((cb & ~ca).sum() / n_cb) if n_cb else np.nan,
            "fix_rate": float((~cb & ca).sum() / n_wb) if n_wb else np.nan}


def edit_summary(method: str, result, model_before, data: Data, split: Split, stats_positions: np.ndarray,
                 cfg: models.ModelConfig, batch_size: int = 256, device="cpu") -> dict:
    """Fix rate on the edited errors, and stability on FT-Train held out from the editing statistics
    (the samples that built P / Fisher / ridge are reported apart, labelled in-sample)."""
    y = split.labels(data, "ft_train")
    imgs = split.images(data, "ft_train")
    held = np.setdiff1d(np.arange(len(y)), stats_positions)
    row = {"method": method, "n_edits": int(len(result.log)),
           "fix_rate": float(result.log["fixed"].mean()) if len(result.log) else np.nan}
    for name, pos in (("heldout", held), ("insample", np.asarray(stats_positions))):
        if len(pos) == 0:
            continue
        pb = models.predict_logits(model_before, imgs[pos], cfg, batch_size, device).argmax(1).numpy()
        pa = models.predict_logits(result.model, imgs[pos], cfg, batch_size, device).argmax(1).numpy()
        t = transitions(y[pos], pb, pa)
        row.update({f"ft_{name}_n": t["n"], f"ft_{name}_stability": t["stability"],
                    f"ft_{name}_regression_rate": t["regression_rate"]})
    row.update({"edit_seconds": result.info.get("edit_seconds"), "stats_seconds": result.info.get("stats_seconds")})
    return row


# --------------------------------------------------------------------------- paired statistics (4-level evaluation)
def mcnemar_exact(correct_before: np.ndarray, correct_after: np.ndarray) -> dict:
    """Exact (binomial) McNemar test of a paired change in correctness.

    b = correct→wrong, c = wrong→correct; under H0 each discordant pair is either way with
    probability ½; two-sided p = min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½). No discordant
    pair: p = 1.
    """
    from scipy.stats import binom

    cb, ca = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    b, c = int((cb & ~ca).sum()), int((~cb & ca).sum())
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))
    return {"correct_to_wrong": b, "wrong_to_correct": c, "p_value": p}


def bootstrap_delta_ci(correct_before: np.ndarray, correct_after: np.ndarray, n_boot: int = 2000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the paired accuracy change (samples resampled with replacement)."""
    d = np.asarray(correct_after, float) - np.asarray(correct_before, float)
    if len(d) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC as MedMNIST reports it: binary on p(class 1), else one-vs-rest macro; NaN if undefined."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    if len(present) < probs.shape[1]:  # OvR needs every class present: average over the present ones
        return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def per_class_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    y, pred = np.asarray(y), np.asarray(pred)
    return np.array([(pred[y == c] == c).mean() if (y == c).any() else np.nan for c in range(n_classes)])
