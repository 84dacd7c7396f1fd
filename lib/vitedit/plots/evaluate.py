"""Figures and tables of notebooks 06 and 07: the comparative evaluation."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from .common import BETTER_WORSE, MARKERS, METHOD_COLORS, _annotate, _save, class_labels


def confusion_improvement(before, after) -> np.ndarray:
    """Signed improvement of a confusion matrix (rows: true, columns: predicted): after − before on
    the diagonal (more correct), before − after off it (fewer errors); > 0 is better in every cell."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    return np.where(np.eye(d.shape[0], dtype=bool), d, -d)


def _confusion_axes(ax, names, title):
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(
        names, fontsize=7, rotation=45 if max(map(len, names)) > 3 else 0, ha="right"
    )
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def confusion_matrices(evals: dict, label_names=None, path: Path | None = None):
    """Test confusion matrix before, and for each method after and the change (after − before).
    Change maps are coloured by :func:`confusion_improvement`: green better (more correct on the
    diagonal, fewer errors off it), red worse, one symmetric scale; their numbers are after − before.
    Counts share one scale; each number is white on a dark cell, black on a light one."""
    methods = list(evals)
    before = np.asarray(next(iter(evals.values()))["confusion"][0])
    k = before.shape[0]
    names = (
        class_labels(label_names, 10, numbered="{}")
        if label_names is not None
        else [str(i) for i in range(k)]
    )
    afters = {m: np.asarray(evals[m]["confusion"][1]) for m in methods}
    gains = {m: confusion_improvement(before, a) for m, a in afters.items()}
    vmax = max([float(before.max())] + [float(a.max()) for a in afters.values()] + [1.0])
    glim = max([float(np.abs(g).max()) for g in gains.values()] + [1.0])
    per_row = 2 if len(methods) > 1 else 1
    n_rows = 1 + -(-len(methods) // per_row)
    side = max(2.8, 0.36 * k + 1.5)
    fig, axes = plt.subplots(
        n_rows,
        2 * per_row,
        figsize=(2 * per_row * (side + 0.6), n_rows * side),
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.12, h_pad=0.08)
    for ax in axes.ravel():
        ax.axis("off")
    fs = 7 if k <= 8 else 6

    def counts(ax, m, title):
        ax.axis("on")
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=vmax)
        _annotate(ax, im, m, [[f"{int(v)}" for v in r] for r in m], fs)
        _confusion_axes(ax, names, title)
        return im

    # one colour bar per scale (the scales are shared), not one per panel: fewer artists for
    # constrained layout to place (its cost measured in the issue-23 closing note)
    count_im = counts(axes[0, 0], before, "before the edit (all methods)")
    change_im = None
    for i, m in enumerate(methods):
        r, c = 1 + i // per_row, 2 * (i % per_row)
        counts(axes[r, c], afters[m], f"{m}: after")
        ax = axes[r, c + 1]
        ax.axis("on")
        delta = afters[m].astype(int) - before.astype(int)
        change_im = ax.imshow(gains[m], cmap=BETTER_WORSE, vmin=-glim, vmax=glim)
        _annotate(
            ax, change_im, gains[m], [[f"{v:+d}" if v else "0" for v in r_] for r_ in delta], fs
        )
        _confusion_axes(ax, names, f"{m}: change (after − before)")
    bar_height = min(0.9, 2.5 / n_rows)  # about one panel row tall, not stretched over the figure
    fig.colorbar(count_im, ax=axes, shrink=bar_height, aspect=15, label="images (counts)")
    if change_im is not None:
        fig.colorbar(
            change_im,
            ax=axes,
            shrink=bar_height,
            aspect=15,
            label="improvement (images)\ngreen better, red worse",
        )
    fig.suptitle(
        "Test confusion matrices (rows: true class, columns: predicted class)\n"
        "change maps: numbers after − before; green = better (diagonal up, off-diagonal down), "
        "red = worse",
        fontsize=10,
    )
    return _save(fig, path)


def per_class_changes(per_class: pd.DataFrame, path: Path | None = None):
    """Test accuracy change per class, one bar group per method."""
    methods = list(dict.fromkeys(per_class["method"]))
    classes = sorted(per_class["class"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(classes) + 2.5), 3.4))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        g = per_class[per_class.method == m].sort_values("class")
        ax.bar(np.arange(len(classes)) + k * width, g.acc_change, width, label=m)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels(
        class_labels(per_class.drop_duplicates("class").sort_values("class").name, 14),
        rotation=30 if len(classes) > 5 else 0,
        ha="right" if len(classes) > 5 else "center",
    )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("true class")
    ax.set_ylabel("Test accuracy change\n(after − before, % points)")
    ax.set_title("per-class Test accuracy change")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return _save(fig, path)


def fix_vs_regression(metrics: pd.DataFrame, path: Path | None = None):
    """Fix rate on the edited errors vs regression on held-out FT-Train: one point per method/setting,
    each with its own marker and colour, named in the legend (no labels on the points to overlap)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = METHOD_COLORS
    for k, (_, r) in enumerate(metrics.iterrows()):
        x, y = r["proj_regression_rate"], r["edit_fix_ratio"]
        ok = pd.notna(x) and pd.notna(y)
        ax.scatter(
            [x] if ok else [],
            [y] if ok else [],
            s=70,
            marker=MARKERS[k % len(MARKERS)],
            facecolors="none",
            edgecolors=colors[k % len(colors)],
            linewidths=1.8,
            label=f"{r['method']} (fix {y:.0%}, regr. {x:.1%})" if ok else f"{r['method']} (n/a)",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(
        "regression on held-out FT-Train\n(% of its correct samples made wrong; lower is better)"
    )
    ax.set_ylabel("fix rate (% of edited errors fixed;\nhigher is better)")
    ax.set_title("what each method fixes and what it breaks")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="method")
    fig.tight_layout()
    return _save(fig, path)


# the summary table's readable columns: (column, shown name) in order, the first present of a name
SUMMARY_COLUMNS = (
    ("method", "method"),
    ("edit_fix_ratio", "fix rate"),
    ("fix_rate", "fix rate"),
    ("proj_regression_rate", "held-out FT-Train regression"),
    ("ft_heldout_regression_rate", "held-out FT-Train regression"),
    ("test_acc_before", "Test acc before"),
    ("test_acc_after", "Test acc after"),
    ("test_acc_delta", "Test Δ acc"),
    ("test_mcnemar_p", "Test McNemar p"),
    ("val_acc_delta", "FT-Val Δ acc"),
    ("edit_time_seconds", "edit seconds"),
    ("edit_seconds", "edit seconds"),
)


MAX_SUMMARY_COLUMNS = 10


def summary_columns(df: pd.DataFrame) -> list[str]:
    """The columns of a per-method metrics table (``metrics.json`` / ``ev.table``, or an edit
    summary) that a report shows: at most :data:`MAX_SUMMARY_COLUMNS`, all of them in ``df``."""
    out, names = [], set()
    for col, name in SUMMARY_COLUMNS:
        if col in df.columns and name not in names:
            out.append(col)
            names.add(name)
    return out[:MAX_SUMMARY_COLUMNS]


def summary_table(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``df`` reduced to :func:`summary_columns` under readable names, rounded; one row per method."""
    names = dict(SUMMARY_COLUMNS)
    cols = summary_columns(df)
    return df[cols].rename(columns={c: names[c] for c in cols}).round(digits)


# per evaluation level: the columns a report shows (the rest: comparative_evaluation_<level>.csv)
LEVEL_COLUMNS = {
    "edit_samples": ("method", "total", "num_fixed", "fix_rate", "broken"),
    "projection_samples": (
        "method",
        "heldout_n",
        "heldout_regression_rate",
        "heldout_acc_before",
        "heldout_acc_after",
        "insample_n",
        "insample_regression_rate",
    ),
    "test_set": (
        "method",
        "acc_before",
        "acc_after",
        "acc_delta",
        "delta_ci_low",
        "delta_ci_high",
        "mcnemar_p",
        "same_pair_fix_rate",
        "pair_classes_regression_rate",
    ),
    "edit_discovery_set": ("method", "total", "wrong_to_correct", "correct_to_wrong", "fix_rate"),
    "val_set": ("method", "total", "acc_before", "acc_after", "acc_delta", "regression_rate"),
}


def level_table(df: pd.DataFrame, level: str, digits: int = 4) -> pd.DataFrame:
    """One evaluation level's table as a report shows it: :data:`LEVEL_COLUMNS` (those present, at
    most MAX_SUMMARY_COLUMNS), indexed by method, rounded."""
    cols = [c for c in LEVEL_COLUMNS.get(level, df.columns) if c in df.columns]
    cols = cols[:MAX_SUMMARY_COLUMNS]
    out = df[cols].round(digits)
    return out.set_index("method") if "method" in out else out
