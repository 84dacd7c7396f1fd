"""Figures and tables of notebooks 04 and 05: the edits (spectra, update norms, the edited
samples' probabilities)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import MARKERS, _save


def nullspace_dims(layer_info: dict, path: Path | None = None):
    """Kept null-space dimension out of the key dimension, per edited (layer, module)."""
    keys = list(layer_info)
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(keys)), 3))
    kept = [layer_info[k]["kept_dim"] for k in keys]
    dims = [layer_info[k]["dim"] for k in keys]
    ax.bar(keys, dims, color="lightgray", label="key dimension")
    ax.bar(keys, kept, color="tab:blue", label="kept (null space)")
    for i, (k, d) in enumerate(zip(kept, dims)):
        ax.text(i, k, f"{k}/{d}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("edited layer (module)")
    ax.set_ylabel("dimensions")
    ax.set_title("null-space dimension per edited layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def eigen_spectra(layer_info: dict, threshold: float | None = None, path: Path | None = None):
    """Eigenvalues of the keys' second moment (descending, log scale) with each layer's null-space
    cut (dashed, from ``eigenvalue_cut``) or one given ``threshold``."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, v in layer_info.items():
        ev = np.sort(np.asarray(v["eigenvalues"]))[::-1]
        (line,) = ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-12), label=k)
        if threshold is None and v.get("eigenvalue_cut"):
            ax.axhline(v["eigenvalue_cut"], color=line.get_color(), ls="--", lw=0.8)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("eigenvalue of E[k kᵀ] (log)")
    ax.set_title("key spectrum (below the dashed cut: null space)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def layer_spectra(results: dict, figure) -> None:
    """Notebook 04's spectra: the first layer edit (in registry order) that recorded its key
    spectra, and, when it projects (its layers record a null-space cut), its null-space
    dimensions. ``figure(name)`` gives a figure's path in the run folder."""
    for res in results.values():
        info = res.info.get("layer_info")
        if info and all("eigenvalues" in v for v in info.values()):
            if any("eigenvalue_cut" in v for v in info.values()):
                nullspace_dims(info, path=figure("nullspace_dims.png"))
            eigen_spectra(info, path=figure("eigen_spectra.png"))  # dashed: the cut
            return


def update_norms(table: pd.DataFrame, path: Path | None = None):
    """Frobenius norm of each layer's update relative to its weight norm, per method."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for k, (method, g) in enumerate(table.groupby("method")):
        ax.plot(g["target"], g["relative_update"], marker=MARKERS[k % len(MARKERS)], label=method)
    ax.set_yscale("log")
    ax.set_xlabel("edited layer (module)")
    ax.set_ylabel("‖ΔW‖ / ‖W‖ (log)")
    ax.set_title("relative update norm per edited layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def edit_probabilities(log: pd.DataFrame, path: Path | None = None):
    """True-class probability of each edited sample before vs after, one panel per method."""
    methods = list(dict.fromkeys(log["method"]))
    fig, axes = plt.subplots(
        1,
        max(1, len(methods)),
        figsize=(3.6 * max(1, len(methods)), 3.6),
        squeeze=False,
        sharey=True,
    )
    for ax, method in zip(axes[0], methods):
        g = log[log.method == method]
        fixed = g.fixed.astype(bool)
        ax.scatter(
            g.p_true_before[fixed], g.p_true_after[fixed], c="tab:green", s=18, label="fixed"
        )
        ax.scatter(
            g.p_true_before[~fixed],
            g.p_true_after[~fixed],
            c="tab:red",
            marker="x",
            s=18,
            label="not fixed",
        )
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("p(true class) before the edit")
        ax.set_title(f"{method}: {int(fixed.sum())}/{len(g)} fixed", fontsize=9)
    axes[0][0].set_ylabel("p(true class) after the edit")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("edited errors: probability of the true class (diagonal: unchanged)")
    fig.tight_layout()
    return _save(fig, path)


# an edit notebook's (04, 05) summary as shown; every column: edit_summary.csv / head_edit_summary.csv
EDIT_SUMMARY_COLUMNS = (
    "method",
    "n_edits",
    "fix_rate",
    "ft_heldout_regression_rate",
    "ft_insample_regression_rate",
    "edit_seconds",
    "preservation_insample",
    "preservation_heldout",
)


def edit_summary_table(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """An edit notebook's per-method summary reduced to :data:`EDIT_SUMMARY_COLUMNS` (those present)."""
    cols = [c for c in EDIT_SUMMARY_COLUMNS if c in df.columns]
    out = df[cols].round(digits)
    return out.set_index("method") if "method" in out else out
