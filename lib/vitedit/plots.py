"""Static matplotlib/seaborn figures for the reports."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",) else None
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _save(fig, path: Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def class_distribution(counts: pd.DataFrame, label_names, path: Path | None = None):
    """Grouped bars: samples per class in each of the four sets (absolute and share)."""
    cls_cols = [c for c in counts.columns if c.startswith("class_")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    sets = counts["set"].tolist()
    x = np.arange(len(cls_cols))
    width = 0.8 / len(sets)
    for k, (_, row) in enumerate(counts.iterrows()):
        vals = row[cls_cols].to_numpy(dtype=float)
        axes[0].bar(x + k * width, vals, width, label=row["set"])
        axes[1].bar(x + k * width, vals / max(vals.sum(), 1), width, label=row["set"])
    for ax, title in zip(axes, ("samples per class", "share of each set")):
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels([str(n)[:14] for n in label_names], rotation=30, ha="right")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    return _save(fig, path)


def example_images(images: np.ndarray, labels: np.ndarray, label_names, per_class: int = 6,
                   seed: int = 0, path: Path | None = None):
    """A grid of example images, one row per class."""
    rng = np.random.default_rng(seed)
    n_cls = len(label_names)
    fig, axes = plt.subplots(n_cls, per_class, figsize=(per_class * 1.2, n_cls * 1.25), squeeze=False)
    for c in range(n_cls):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(pick):
                img = images[pick[j]]
                ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray")
        axes[c, 0].set_title(str(label_names[c])[:20], fontsize=8, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def training_curves(history: pd.DataFrame, best_epoch: int | None = None, path: Path | None = None):
    """Loss and accuracy per epoch on FT-Train and FT-Val; the selected epoch is marked."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    e = history["epoch"]
    axes[0].plot(e, history["train_loss"], label="FT-Train")
    axes[0].plot(e, history["val_loss"], label="FT-Val")
    axes[0].set_title("loss")
    axes[1].plot(e, history["train_acc"], label="FT-Train (augmented)")
    axes[1].plot(e, history["val_acc"], label="FT-Val")
    axes[1].set_title("accuracy")
    axes[2].plot(e, history["lr"])
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes[:2]:
        if best_epoch:
            ax.axvline(best_epoch, color="k", ls="--", lw=1, label=f"selected (epoch {best_epoch})")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _save(fig, path)
