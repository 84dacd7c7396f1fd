"""Figures and tables of notebooks 01 and 02: the data and the training."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from .common import _save, _show_image, class_labels


def class_count_table(counts: pd.DataFrame, label_names) -> pd.DataFrame:
    """``splits.counts_table`` with the class columns (``class_<i>_<name>``) named by the dataset's
    class names."""
    cls_cols = [c for c in counts.columns if c.startswith("class_")]
    return counts.rename(columns=dict(zip(cls_cols, class_labels(label_names))))


def class_distribution(counts: pd.DataFrame, label_names, path: Path | None = None):
    """Grouped bars: samples per class in each of the four sets (absolute and share)."""
    cls_cols = [c for c in counts.columns if c.startswith("class_")]
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.4 * len(cls_cols) + 4), 4.2))
    x = np.arange(len(cls_cols))
    width = 0.8 / max(1, len(counts))
    for k, (_, row) in enumerate(counts.iterrows()):
        vals = row[cls_cols].to_numpy(dtype=float)
        axes[0].bar(x + k * width, vals, width, label=row["set"])
        axes[1].bar(x + k * width, vals / max(vals.sum(), 1), width, label=row["set"])
    for ax, title in zip(axes, ("images per class", "class shares within each set")):
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels(class_labels(label_names, 18), rotation=30, ha="right")
        ax.set_xlabel("class")
        ax.set_title(title)
    axes[0].set_ylabel("number of images")
    axes[1].set_ylabel("share of the set's images")
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0].legend(title="set")
    fig.tight_layout()
    return _save(fig, path)


def example_images(
    images: np.ndarray,
    labels: np.ndarray,
    label_names,
    per_class: int = 6,
    seed: int = 0,
    path: Path | None = None,
    title: str = "example images, one row per class",
):
    """A grid of example images, one row per class (its name on the left)."""
    rng = np.random.default_rng(seed)
    n_cls = len(label_names)
    names = class_labels(label_names, 22)
    fig, axes = plt.subplots(
        n_cls, per_class, figsize=(per_class * 1.2 + 1.2, n_cls * 1.25 + 0.5), squeeze=False
    )
    for c in range(n_cls):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(pick):
                _show_image(ax, images[pick[j]])
        axes[c, 0].set_ylabel(
            f"{names[c]}\n({len(idx)} images)", fontsize=8, rotation=0, ha="right", va="center"
        )
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def training_curves(history: pd.DataFrame, best_epoch: int | None = None, path: Path | None = None):
    """Loss and accuracy per epoch on FT-Train and FT-Val; the selected epoch is marked."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    e = history["epoch"]
    axes[0].plot(e, history["train_loss"], label="FT-Train")
    axes[0].plot(e, history["val_loss"], label="FT-Val")
    axes[0].set_title("loss")
    axes[0].set_ylabel("cross-entropy loss")
    axes[1].plot(e, history["train_acc"], label="FT-Train (augmented)")
    axes[1].plot(e, history["val_acc"], label="FT-Val")
    axes[1].set_title("accuracy")
    axes[1].set_ylabel("accuracy")
    axes[2].plot(e, history["lr"])
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].set_ylabel("learning rate")
    for ax in axes[:2]:
        if best_epoch:
            ax.axvline(best_epoch, color="k", ls="--", lw=1, label=f"selected (epoch {best_epoch})")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _save(fig, path)
