"""Static matplotlib/seaborn figures for the reports."""

from __future__ import annotations

from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() != "module://matplotlib_inline.backend_inline":
    matplotlib.use("Agg")  # headless outside a notebook kernel
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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


def example_images(
    images: np.ndarray,
    labels: np.ndarray,
    label_names,
    per_class: int = 6,
    seed: int = 0,
    path: Path | None = None,
):
    """A grid of example images, one row per class."""
    rng = np.random.default_rng(seed)
    n_cls = len(label_names)
    fig, axes = plt.subplots(
        n_cls, per_class, figsize=(per_class * 1.2, n_cls * 1.25), squeeze=False
    )
    for c in range(n_cls):
        idx = np.flatnonzero(labels == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(pick):
                img = images[pick[j]]
                ax.imshow(
                    img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray"
                )
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


KIND_COLORS = {"block": "tab:purple", "mlp": "tab:green", "attn": "tab:red"}


def trace_heatmaps(
    importance: pd.DataFrame,
    scope: str = "all",
    value: str = "norm_effect",
    path: Path | None = None,
):
    """Samples x layers heatmap of the (normalised) indirect effect, one panel per kind."""
    d = importance[importance.scope == scope]
    kinds = [k for k in ("block", "mlp", "attn") if k in set(d.kind)]
    fig, axes = plt.subplots(
        1,
        max(1, len(kinds)),
        figsize=(4.6 * max(1, len(kinds)), 0.18 * d["sample"].nunique() + 2),
        squeeze=False,
    )
    for ax, kind in zip(axes[0], kinds):
        m = d[d.kind == kind].pivot_table(
            index="sample", columns="layer", values=value, aggfunc="mean"
        )
        im = ax.imshow(
            m.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        ax.set_title(f"{kind} (scope {scope})")
        ax.set_xlabel("layer")
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels(m.columns)
        ax.set_yticks([])
        ax.set_ylabel(f"{m.shape[0]} errors (blank: |TE| too small)")
    fig.colorbar(
        im, ax=axes[0].tolist(), label="IE / TE" if value == "norm_effect" else value, shrink=0.8
    )
    return _save(fig, path)


def trace_means(stats: pd.DataFrame, scope: str = "all", path: Path | None = None):
    """Mean IE/TE per layer with its 95% CI, block / mlp / attn side by side."""
    d = stats[stats.scope == scope]
    kinds = [k for k in ("block", "mlp", "attn") if k in set(d.kind)]
    fig, axes = plt.subplots(
        1, max(1, len(kinds)), figsize=(4.6 * max(1, len(kinds)), 3.4), sharey=True, squeeze=False
    )
    for ax, kind in zip(axes[0], kinds):
        s = d[d.kind == kind].sort_values("layer")
        ax.plot(s.layer, s["mean"], "o-", color=KIND_COLORS[kind])
        ax.fill_between(
            s.layer, s.ci_low, s.ci_high, color=KIND_COLORS[kind], alpha=0.2, label="95% CI"
        )
        ax.axhline(0, color="k", lw=0.6)
        n = int(s.n_used.max()) if len(s) else 0
        trivial = " — clean state by construction" if kind == "block" and scope == "all" else ""
        ax.set_title(f"{kind}: mean IE/TE (n={n}){trivial}", fontsize=10)
        ax.set_xlabel("layer")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("restored share of the total effect")
    fig.tight_layout()
    return _save(fig, path)


def trace_examples(
    images: np.ndarray,
    importance: pd.DataFrame,
    samples,
    label_names,
    scope: str = "all",
    corrupted: list | None = None,
    path: Path | None = None,
):
    """For a few errors: the clean image, a corrupted view, and p(predicted class) when restoring
    each layer, per kind, between the clean and corrupted levels."""
    samples = list(samples)
    cols = 3 if corrupted is not None else 2
    fig, axes = plt.subplots(
        len(samples),
        cols,
        figsize=(3 * cols + 4, 2.4 * len(samples)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * (cols - 1) + [3]},
    )
    for k, (row, s) in enumerate(zip(axes, samples)):
        d = importance[(importance["sample"] == s) & (importance.scope == scope)]
        img = images[s]
        row[0].imshow(img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray")
        t, p = int(d.true_label.iloc[0]), int(d.pred_label.iloc[0])
        row[0].set_title(f"#{s} clean: true {label_names[t]}, pred {label_names[p]}", fontsize=8)
        if corrupted is not None:
            row[1].imshow(corrupted[k])
            row[1].set_title("one corrupted copy (pixel view)", fontsize=8)
        for ax in row[:-1]:
            ax.axis("off")
        ax = row[-1]
        for kind, g in d.groupby("kind"):
            g = g.sort_values("layer")
            ax.plot(
                g.layer,
                g.p_restored,
                "o-",
                ms=3,
                color=KIND_COLORS.get(kind),
                label=f"restore {kind}",
            )
        ax.axhline(d.p_clean.iloc[0], color="k", ls="--", lw=1, label="clean")
        ax.axhline(d.p_corrupted.iloc[0], color="gray", ls=":", lw=1, label="corrupted")
        ax.set_ylabel(f"p({label_names[p]})", fontsize=8)
    axes[0][-1].legend(fontsize=7, ncol=5, loc="upper left")
    axes[-1][-1].set_xlabel("layer")
    fig.tight_layout()
    return _save(fig, path)


def attribution_maps(images: np.ndarray, maps, titles, path: Path | None = None):
    """Each image above its patch attribution (Lasso coefficients; red supports the traced class)."""
    n = max(1, len(maps))
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for j, (img, m, title) in enumerate(zip(images, maps, titles)):
        axes[0, j].imshow(
            img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray"
        )
        axes[0, j].set_title(title, fontsize=8)
        lim = max(float(np.abs(m).max()), 1e-9)
        axes[1, j].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        axes[1, j].set_title(f"max |coef| {lim:.3f}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def region_traces(
    images: np.ndarray,
    importance: pd.DataFrame,
    mean: pd.DataFrame,
    per: dict,
    label_names,
    attributions: dict | None = None,
    path: Path | None = None,
):
    """ROME's token x layer figure for a ViT: for each shown error, p(predicted class) gained when the
    block output at CLS or at one patch region is restored (IE, rows: CLS + regions row-major from
    the top left, columns: layers), beside the image, its patch attribution when there is one, and,
    in the top row, the mean IE/TE over every traced error with a usable TE. One colour scale for
    every IE panel. ``mean`` and ``per`` (sample -> table) come from
    :func:`vitedit.locate.region_tables`; ``importance`` gives each sample's labels and TE."""
    samples = list(per)
    attributions = attributions or {}
    lim = max(
        [float(np.nanmax(np.abs(t.to_numpy()))) for t in per.values() if not t.empty] + [1e-9]
    )
    n = 1 + len(samples)
    fig, axes = plt.subplots(
        n, 3, figsize=(11, 2.8 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 3, 1]}
    )

    def heat(ax, t, vmin, vmax, cmap, label):
        im = ax.imshow(
            t.to_numpy(), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        ax.set_yticks(range(len(t.index)), [str(s) for s in t.index], fontsize=6)
        ax.set_xticks(range(len(t.columns)), [str(c) for c in t.columns], fontsize=7)
        ax.set_xlabel("layer (block output restored)")
        ax.set_ylabel("token group")
        fig.colorbar(im, ax=ax, fraction=0.03, label=label)

    axes[0, 0].axis("off")
    axes[0, 2].axis("off")
    if mean.empty:
        axes[0, 1].axis("off")
        axes[0, 1].set_title("no traced error has a usable total effect")
    else:
        heat(axes[0, 1], mean, -1, 1, "RdBu_r", "mean IE/TE")
        axes[0, 1].set_title(
            "mean over traced errors (IE/TE; 1: restoring it undoes the corruption)"
        )
    for i, s in enumerate(samples, start=1):
        img = images[s]
        axes[i, 0].imshow(
            img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray"
        )
        row = importance[importance["sample"] == s].iloc[0]
        axes[i, 0].set_title(
            f"#{s} true {label_names[int(row.true_label)]}\npred {label_names[int(row.pred_label)]}",
            fontsize=7,
        )
        axes[i, 0].axis("off")
        if per[s].empty:
            axes[i, 1].axis("off")
        else:
            heat(axes[i, 1], per[s], -lim, lim, "RdBu_r", "IE, p(pred)")
            axes[i, 1].set_title(f"TE {row.te:+.3f}", fontsize=8)
        m = attributions.get(s)
        if m is None:
            axes[i, 2].axis("off")
        else:
            al = max(float(np.abs(m).max()), 1e-9)
            im = axes[i, 2].imshow(m, cmap="RdBu_r", vmin=-al, vmax=al, interpolation="nearest")
            axes[i, 2].set_title("patch attribution\n(red: toward pred)", fontsize=7)
            axes[i, 2].axis("off")
            fig.colorbar(im, ax=axes[i, 2], fraction=0.05)
    fig.tight_layout()
    return _save(fig, path)


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
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue of E[k kᵀ]")
    ax.set_title("key spectrum (below the threshold: null space)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def update_norms(table: pd.DataFrame, path: Path | None = None):
    """Frobenius norm of each layer's update relative to its weight norm, per method."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for method, g in table.groupby("method"):
        ax.plot(g["target"], g["relative_update"], "o-", label=method)
    ax.set_yscale("log")
    ax.set_ylabel("‖ΔW‖ / ‖W‖")
    ax.set_title("update norms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def edit_probabilities(log: pd.DataFrame, path: Path | None = None):
    """True-class probability of each edited sample before vs after, one panel per method."""
    methods = list(dict.fromkeys(log["method"]))
    fig, axes = plt.subplots(
        1, max(1, len(methods)), figsize=(3.6 * max(1, len(methods)), 3.4), squeeze=False
    )
    for ax, method in zip(axes[0], methods):
        g = log[log.method == method]
        ax.scatter(
            g.p_true_before, g.p_true_after, c=np.where(g.fixed, "tab:green", "tab:red"), s=18
        )
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("p(true) before")
        ax.set_title(f"{method}: {int(g.fixed.sum())}/{len(g)} fixed", fontsize=9)
    axes[0][0].set_ylabel("p(true) after (green: fixed)")
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrices(evals: dict, label_names, path: Path | None = None):
    """Test confusion matrix before, and after / difference for each method."""
    methods = list(evals)
    fig, axes = plt.subplots(
        2, len(methods) + 1, figsize=(3.2 * (len(methods) + 1), 6.2), squeeze=False
    )
    before = next(iter(evals.values()))["confusion"][0]
    names = [str(n)[:8] for n in label_names]

    def show(ax, m, title, cmap, center=False):
        lim = max(abs(m).max(), 1)
        ax.imshow(m, cmap=cmap, vmin=-lim if center else 0, vmax=lim)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, int(v), ha="center", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=7)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)

    show(axes[0, 0], before, "before (rows: true)", "Blues")
    axes[1, 0].axis("off")
    for k, m in enumerate(methods, start=1):
        after = evals[m]["confusion"][1]
        show(axes[0, k], after, f"{m}: after", "Blues")
        show(axes[1, k], after - before, f"{m}: after − before", "RdBu_r", center=True)
    fig.tight_layout()
    return _save(fig, path)


def per_class_changes(per_class: pd.DataFrame, path: Path | None = None):
    """Test accuracy change per class, one bar group per method."""
    methods = list(dict.fromkeys(per_class["method"]))
    classes = sorted(per_class["class"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(classes)), 3.2))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        g = per_class[per_class.method == m].sort_values("class")
        ax.bar(np.arange(len(classes)) + k * width, g.acc_change, width, label=m)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels(
        [str(n)[:10] for n in per_class.drop_duplicates("class").sort_values("class").name]
    )
    ax.set_ylabel("Test accuracy change")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def fix_vs_regression(metrics: pd.DataFrame, path: Path | None = None):
    """Fix rate on the edited errors vs regression on held-out FT-Train: one point per method/setting."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for _, r in metrics.iterrows():
        ax.scatter(r["proj_regression_rate"], r["edit_fix_ratio"], s=40)
        ax.annotate(
            r["method"],
            (r["proj_regression_rate"], r["edit_fix_ratio"]),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regression rate on held-out FT-Train (lower is better)")
    ax.set_ylabel("fix rate on edited errors (higher is better)")
    ax.set_title("what each method fixes and what it breaks")
    fig.tight_layout()
    return _save(fig, path)


def pareto_front(fix: np.ndarray, regression: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (fix at least as high and regression at least as
    low, one of them strictly); NaN points are never on the front."""
    fix, reg = np.asarray(fix, float), np.asarray(regression, float)
    ok = np.isfinite(fix) & np.isfinite(reg)
    front = np.zeros(len(fix), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (fix >= fix[i]) & (reg <= reg[i]) & ((fix > fix[i]) | (reg < reg[i]))
        front[i] = not dominated.any()
    return front


def sweep_pareto(
    summary: pd.DataFrame, chosen: pd.DataFrame | None = None, path: Path | None = None
):
    """Every configuration's fix rate vs held-out FT-Train regression, by method; the Pareto front
    joined by a line, the chosen configuration of each method ringed."""
    ok = summary[summary.status == "ok"]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    methods = list(dict.fromkeys(ok.method))
    colors = dict(zip(methods, plt.cm.tab10.colors))
    for m in methods:
        g = ok[ok.method == m]
        ax.scatter(
            g.proj_regression_rate, g.edit_fix_ratio, s=28, alpha=0.75, color=colors[m], label=m
        )
    front = pareto_front(ok.edit_fix_ratio, ok.proj_regression_rate)
    f = ok[front].sort_values("proj_regression_rate")
    ax.plot(f.proj_regression_rate, f.edit_fix_ratio, "k--", lw=0.8, label="Pareto front")
    if chosen is not None and len(chosen):
        for _, r in ok[ok.config_id.isin(set(chosen.config_id))].iterrows():
            ax.scatter(
                r.proj_regression_rate,
                r.edit_fix_ratio,
                s=140,
                facecolors="none",
                edgecolors=colors.get(r.method, "k"),
                linewidths=1.6,
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regression on held-out FT-Train (lower is better)")
    ax.set_ylabel("fix rate on the edited errors (higher is better)")
    ax.set_title("every configuration (ringed: chosen on FT-Val)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def budget_curves(
    settings: pd.DataFrame, points: pd.DataFrame, path: Path | None = None, title: str = ""
):
    """Every method's trade-off curve on one plot: one point per setting (mean over seeds) of fix
    rate against held-out FT-Train regression, each method's own Pareto front joined; the settings
    chosen on FT-Val at each regression budget are starred (their budget in the legend)."""
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    methods = list(dict.fromkeys(settings.method))
    colors = dict(zip(methods, plt.cm.tab10.colors))
    markers = dict(zip(sorted(points.budget.unique()) if len(points) else [], "*PX^v"))
    for m in methods:
        g = settings[settings.method == m]
        ax.scatter(g.proj_regression_rate, g.edit_fix_ratio, s=18, alpha=0.5, color=colors[m])
        front = g[pareto_front(g.edit_fix_ratio, g.proj_regression_rate)]
        front = front.sort_values("proj_regression_rate")
        ax.plot(front.proj_regression_rate, front.edit_fix_ratio, "-", color=colors[m], label=m)
        for _, r in points[(points.method == m) & (points.config_id != "")].iterrows():
            ax.scatter(
                r.proj_regression_rate,
                r.edit_fix_ratio,
                s=170,
                marker=markers[r.budget],
                color=colors[m],
                edgecolors="k",
                linewidths=0.7,
                zorder=5,
            )
    for b, mk in markers.items():
        ax.scatter(
            [], [], marker=mk, s=120, color="w", edgecolors="k", label=f"chosen at <= {b:.0%}"
        )
        ax.axvline(b, color="grey", lw=0.6, ls=":")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regression on held-out FT-Train (symlog; dotted: the budgets)")
    ax.set_ylabel("fix rate on the edited errors (mean over seeds)")
    ax.set_title(
        (f"{title}: " if title else "") + "trade-off per method (budget points chosen on FT-Val)"
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def metric_vs_param(
    summary: pd.DataFrame,
    param: str,
    metrics=("edit_fix_ratio", "proj_regression_rate", "val_acc_delta", "test_acc_delta"),
    path: Path | None = None,
):
    """Mean of each metric per value of one searched parameter (other parameters averaged), one
    line per method. Test appears for reporting; the selection uses the others."""
    ok = (
        summary[(summary.status == "ok") & summary[param].notna()].copy()
        if param in summary
        else summary.iloc[:0]
    )
    metrics = [m for m in metrics if m in ok]
    fig, axes = plt.subplots(
        1, max(1, len(metrics)), figsize=(3.3 * max(1, len(metrics)), 3), squeeze=False
    )
    if len(ok):
        ok["_x"] = ok[param].astype(str)
        order = sorted(ok["_x"].unique(), key=lambda v: (float(v) if _is_number(v) else np.inf, v))
        pos = {v: i for i, v in enumerate(order)}
        for ax, m in zip(axes[0], metrics):
            for meth, g in ok.groupby("method", sort=False):
                s = g.groupby("_x")[m].mean()
                xs = sorted(s.index, key=pos.get)
                ax.plot([pos[x] for x in xs], [s[x] for x in xs], "o-", ms=4, label=meth)
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels(order, fontsize=7, rotation=30)
            ax.set_xlabel(param)
            ax.set_title(m + (" (reported only)" if m.startswith("test_") else ""), fontsize=9)
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
