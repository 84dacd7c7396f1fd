"""Static matplotlib/seaborn figures for the reports, and the compact tables shown beside them
(the full tables are in the run folder's CSV / JSON files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() != "module://matplotlib_inline.backend_inline":
    matplotlib.use("Agg")  # headless outside a notebook kernel
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

# difference maps: one colour means "better" everywhere (green), "worse" red, no change white
BETTER_WORSE = LinearSegmentedColormap.from_list("worse_better", ["#b2182b", "#f7f7f7", "#1a9850"])
MARKERS = "osD^vPX*<>ph"


SAVE_DPI = 120


def _save(fig, path: Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight")
        if Path(path).suffix.lower() == ".png":
            fig._vitedit_png = Path(path).read_bytes()  # shown as saved: see _show_saved_png
            fig.stale = False  # any change to the figure from here on sets it again
    return fig


def _show_saved_png(fig):
    """A notebook kernel shows a figure this module saved as the very PNG it saved (at the size the
    kernel would have drawn it), instead of drawing it a second time: drawing is most of a plot's
    cost (8-method confusion matrices: seconds per draw). None: the kernel's own drawing."""
    data = getattr(fig, "_vitedit_png", None)
    if data is None or fig.stale:  # not saved here, or changed since it was saved
        return None
    width = int.from_bytes(data[16:20], "big")  # PNG IHDR: the width in pixels
    # the width only: a page that narrows the image to fit keeps its aspect ratio
    return data, {"width": round(width * fig.dpi / SAVE_DPI)}


def _register_saved_png_display() -> None:
    """In a kernel with the inline backend: figures saved by :func:`_save` display as saved."""
    try:
        from IPython import get_ipython  # lazy: optional, there in a notebook kernel only
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    if "inline" in matplotlib.get_backend():
        # matplotlib loads its backend at the first figure; loading it now makes the inline
        # backend register its figure formatter first, so that ours wraps it (not the reverse)
        import matplotlib_inline.backend_inline  # noqa: F401  # lazy: a kernel's backend only
    fmt = ip.display_formatter.formatters["image/png"]
    try:
        draw = fmt.lookup_by_type(Figure)  # the inline backend's own drawing
    except KeyError:
        return  # figures are not shown as PNG in this kernel: nothing to replace
    if getattr(draw, "_vitedit", False):
        return

    def png(fig):
        return _show_saved_png(fig) or draw(fig)

    png._vitedit = True
    fmt.for_type(Figure, png)


def _show_image(ax, img):
    ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray")


def class_labels(label_names, width: int | None = None, numbered: str = "class {}") -> list[str]:
    """Readable, distinct class names: ``numbered`` where a name is only its index (RetinaMNIST's
    grades '0'..'4'), the part before a parenthesis, cut to ``width`` characters with an ellipsis."""
    out = []
    for i, name in enumerate(label_names):
        s = str(name).strip()
        if s == str(i):
            s = numbered.format(i)
        elif "(" in s and not s.startswith("("):
            s = s.split("(")[0].strip()
        if width and len(s) > width:
            s = s[: width - 1].rstrip() + "…"
        out.append(s)
    return [f"{s} ({i})" if out.count(s) > 1 else s for i, s in enumerate(out)]


def text_color(im, value) -> str:
    """White on a dark cell of ``im`` (an ``AxesImage``), black on a light one (luminance < 0.5)."""
    r, g, b, _ = im.cmap(im.norm(value))
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def _annotate(ax, im, values, labels=None, fontsize=7):
    """Each cell's number in a colour readable on its cell."""
    values = np.asarray(values)
    for (i, j), v in np.ndenumerate(values):
        text = labels[i][j] if labels is not None else f"{v:g}"
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=text_color(im, v))


# --------------------------------------------------------------------------- 01: data
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


# --------------------------------------------------------------------------- 03: tracing
# red and green mean worse and better (change maps); kinds and methods use other colours
KIND_COLORS = {"block": "tab:purple", "mlp": "tab:blue", "attn": "tab:orange"}
METHOD_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
    "navy",
    "gold",
    "black",
    "teal",
    "maroon",
    "darkviolet",
    "sienna",
    "slategray",
)


def method_colors(methods) -> dict:
    """A colour per method, in order; more methods than colours reuse them (never a KeyError: the
    benchmark's variants, e.g. ``alphaedit[region_max]``, add rows to the registered methods)."""
    return {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods)}


IDENTITY = ("block", "all")  # restoring every token's block output: the clean state, IE/TE = 1
IDENTITY_TOLERANCE = 1e-4


def _informative_kinds(d: pd.DataFrame, scope: str) -> list[str]:
    """The traced kinds of ``scope`` other than the identity check (block output on all tokens)."""
    return [k for k in ("block", "mlp", "attn") if k in set(d.kind) and (k, scope) != IDENTITY]


def identity_deviation(importance: pd.DataFrame) -> tuple[float, int]:
    """Max |IE/TE − 1| of the identity check (``block``/``all``) over the (error, layer) rows with a
    usable TE, and their number (NaN, 0 when it was not traced or no TE is usable)."""
    d = importance[(importance.kind == IDENTITY[0]) & (importance.scope == IDENTITY[1])]
    d = d[d.te_valid.astype(bool)]
    if d.empty:
        return float("nan"), 0
    return float(np.abs(d.norm_effect.astype(float) - 1).max()), int(len(d))


def identity_check(importance: pd.DataFrame) -> str:
    """One line on the identity check: restoring every token's block output gives IE/TE = 1."""
    dev, n = identity_deviation(importance)
    if n == 0:
        return "identity check (block/all): not traced, or no error with a usable TE"
    verdict = "passed" if dev <= IDENTITY_TOLERANCE else "FAILED: the restoration is not exact"
    return (
        f"identity check (block output restored on all tokens, IE/TE must be 1 at every layer): "
        f"max |IE/TE - 1| = {dev:.1e} over {n} (error, layer) pairs with a usable TE: {verdict}"
    )


def trace_stats_table(stats: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``layer_statistics.csv`` in one row per (scope, layer): for each kind its mean IE/TE and
    95% CI as "mean [low, high]", and the errors the means rest on (indexed by layer, or by (scope,
    layer) when several scopes were traced); the identity check (block/all) left out (see
    :func:`identity_check`)."""
    d = stats[~((stats.kind == IDENTITY[0]) & (stats.scope == IDENTITY[1]))]
    if d.empty:
        return pd.DataFrame(columns=["errors used"]).rename_axis("layer")
    f = f"{{:.{digits}f}}"

    def cell(r):
        if pd.isna(r["mean"]):
            return "–"
        return f"{f.format(r['mean'])} [{f.format(r.ci_low)}, {f.format(r.ci_high)}]"

    d = d.assign(cell=d.apply(cell, axis=1))
    kinds = [k for k in ("mlp", "attn", "block") if k in set(d.kind)] + sorted(
        set(d.kind) - {"mlp", "attn", "block"}
    )
    out = d.pivot_table(index=["scope", "layer"], columns="kind", values="cell", aggfunc="first")
    out = out[kinds].fillna("–").rename(columns={k: f"{k}: mean IE/TE [95% CI]" for k in kinds})
    out["errors used"] = d.groupby(["scope", "layer"])["n_used"].max().astype(int)
    out.columns.name = None
    return out.droplevel("scope") if d.scope.nunique() == 1 else out


def layer_choice_text(choice: dict, summary: dict, min_total_effect: float | None = None) -> str:
    """The chosen edit layers with how many traced errors the ranking rests on and how many were
    excluded (|TE| below ``min_total_effect``), in one statement."""
    n_traced = int(summary.get("n_traced") or 0)
    n_low = int(summary.get("n_low_total_effect") or 0)
    thr = f" < {min_total_effect:g}" if min_total_effect is not None else " too small"
    text = f"edit layers {choice['layers']} ({choice['source']}: {choice['reason']})"
    if n_traced:
        text += (
            f"; tracing: {n_traced - n_low} of {n_traced} traced errors used, "
            f"{n_low} of {n_traced} ({n_low / n_traced:.0%}) excluded (|TE|{thr})"
        )
    else:
        text += "; tracing: no error traced"
    return text


def trace_heatmaps(
    importance: pd.DataFrame,
    scope: str = "all",
    value: str = "norm_effect",
    path: Path | None = None,
):
    """Samples x layers heatmap of the (normalised) indirect effect, one panel per kind; the
    identity check (block output on all tokens, IE/TE = 1) is not drawn: :func:`identity_check`."""
    d = importance[importance.scope == scope]
    kinds = _informative_kinds(d, scope)
    n = max(1, len(kinds))
    n_traced = d["sample"].nunique()
    fig, axes = plt.subplots(
        1, n, figsize=(4.6 * n + 1, 0.18 * n_traced + 2.2), squeeze=False, layout="constrained"
    )
    label = "IE / TE" if value == "norm_effect" else value
    im = None
    for ax, kind in zip(axes[0], kinds):
        m = d[d.kind == kind].pivot_table(
            index="sample", columns="layer", values=value, aggfunc="mean"
        )
        if m.empty:  # every traced error had |TE| too small: say so instead of an empty image
            ax.axis("off")
            ax.set_title(f"{kind} output restored: no error with a usable TE")
            continue
        im = ax.imshow(
            m.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        ax.set_title(f"{kind} output restored (tokens: {scope})")
        ax.set_xlabel("layer")
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels(m.columns)
        ax.set_yticks([])
        ax.set_ylabel(f"{m.shape[0]} of {n_traced} traced errors (the rest: |TE| too small)")
    if im is None:
        axes[0][0].axis("off")
        axes[0][0].set_title(f"scope {scope}: nothing traced but the identity check")
    else:
        fig.colorbar(im, ax=axes[0].tolist(), label=label, shrink=0.8)
    fig.suptitle(f"{label} per traced error and layer")
    return _save(fig, path)


def trace_means(stats: pd.DataFrame, scope: str = "all", path: Path | None = None):
    """Mean IE/TE per layer with its 95% CI, mlp / attn (and block on a partial scope) side by side;
    the identity check (block output on all tokens) is not drawn: :func:`identity_check`."""
    d = stats[stats.scope == scope]
    kinds = _informative_kinds(d, scope)
    n_panels = max(1, len(kinds))
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 3.4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        s = d[d.kind == kind].sort_values("layer")
        ax.plot(s.layer, s["mean"], "o-", color=KIND_COLORS.get(kind), label="mean")
        ax.fill_between(
            s.layer, s.ci_low, s.ci_high, color=KIND_COLORS.get(kind), alpha=0.2, label="95% CI"
        )
        ax.axhline(0, color="k", lw=0.6)
        n = int(s.n_used.max()) if len(s) else 0
        ax.set_title(f"{kind} output restored: mean IE/TE (n={n})", fontsize=10)
        ax.set_xlabel("layer")
        ax.legend(fontsize=8)
    if not kinds:
        axes[0][0].axis("off")
        axes[0][0].set_title(f"scope {scope}: nothing traced but the identity check")
    axes[0][0].set_ylabel("IE/TE: restored share of the total effect")
    fig.suptitle(f"where the wrong decision is carried (tokens restored: {scope})")
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
    names = class_labels(label_names, 16)
    cols = 3 if corrupted is not None else 2
    fig, axes = plt.subplots(
        len(samples),
        cols,
        figsize=(3 * cols + 4, 2.4 * len(samples) + 0.4),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * (cols - 1) + [3]},
    )
    for k, (row, s) in enumerate(zip(axes, samples)):
        d = importance[(importance["sample"] == s) & (importance.scope == scope)]
        _show_image(row[0], images[s])
        t, p = int(d.true_label.iloc[0]), int(d.pred_label.iloc[0])
        row[0].set_title(f"#{s} clean: true {names[t]}, pred {names[p]}", fontsize=8)
        if corrupted is not None:
            row[1].imshow(corrupted[k])
            row[1].set_title("one corrupted copy (pixel view)", fontsize=8)
        for ax in row[:-1]:
            ax.axis("off")
        ax = row[-1]
        for kind, g in d.groupby("kind"):
            if (kind, scope) == IDENTITY:
                continue  # the identity check: p(restored) = p(clean) at every layer
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
        ax.set_ylabel(f"p({names[p]})", fontsize=8)
        ax.set_xlabel("layer restored")
        ax.set_title(f"#{s}: p(predicted class) with one layer restored", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"traced errors: clean, corrupted and restored (tokens: {scope})")
    fig.tight_layout()
    return _save(fig, path)


def attribution_maps(images: np.ndarray, maps, titles, path: Path | None = None):
    """Each image above its patch attribution (Lasso coefficients; red supports the traced class),
    one colour scale for every map and its colour bar."""
    n = max(1, len(maps))
    # one scale, set by the median map's peak: a map ten times stronger than the rest saturates
    # (its own peak is in its title) instead of leaving every other map blank
    peaks = [float(np.abs(np.asarray(m)).max()) for m in maps]
    lim = max(float(np.median(peaks)) if peaks else 0.0, 1e-9)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n + 1.2, 5), squeeze=False, layout="constrained")
    im = None
    for j, (img, m, title) in enumerate(zip(images, maps, titles)):
        _show_image(axes[0, j], img)
        axes[0, j].set_title(title, fontsize=8)
        im = axes[1, j].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        axes[1, j].set_title(f"max |coef| {float(np.abs(m).max()):.3f}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    if im is not None:
        fig.colorbar(
            im,
            ax=axes[1, :].tolist(),
            shrink=0.9,
            extend="both" if max(peaks) > lim else "neither",
            label="Lasso coefficient\n(red: toward predicted class)",
        )
    fig.suptitle("patch attribution of p(predicted class) (one colour scale, the median peak)")
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
    every IE panel, one for every attribution map. ``mean`` and ``per`` (sample -> table) come from
    :func:`vitedit.locate.region_tables`; ``importance`` gives each sample's labels and TE."""
    samples = list(per)
    names = class_labels(label_names, 16)
    attributions = {s: m for s, m in (attributions or {}).items() if s in per}
    lim = max(
        [float(np.nanmax(np.abs(t.to_numpy()))) for t in per.values() if not t.empty] + [1e-9]
    )
    alim = max([float(np.abs(np.asarray(m)).max()) for m in attributions.values()] + [1e-9])
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
        _show_image(axes[i, 0], images[s])
        row = importance[importance["sample"] == s].iloc[0]
        axes[i, 0].set_title(
            f"#{s} true {names[int(row.true_label)]}\npred {names[int(row.pred_label)]}",
            fontsize=7,
        )
        axes[i, 0].axis("off")
        if per[s].empty:
            axes[i, 1].axis("off")
        else:
            heat(axes[i, 1], per[s], -lim, lim, "RdBu_r", "IE, p(pred)")
            axes[i, 1].set_title(f"#{s}: TE {row.te:+.3f}", fontsize=8)
        m = attributions.get(s)
        if m is None:
            axes[i, 2].axis("off")
        else:
            im = axes[i, 2].imshow(m, cmap="RdBu_r", vmin=-alim, vmax=alim, interpolation="nearest")
            axes[i, 2].set_title("patch attribution\n(red: toward pred)", fontsize=7)
            axes[i, 2].axis("off")
            fig.colorbar(im, ax=axes[i, 2], fraction=0.05, label="Lasso coef.")
    fig.suptitle("token x layer trace: where in the image, at which layer")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- 04, 05: editing
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


# --------------------------------------------------------------------------- 06, 07: evaluation
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
    # constrained layout (8 methods: 13.0 -> 10.9 s to lay out and save, on a loaded machine)
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


def level_table(df: pd.DataFrame, level: str, digits: int = 4) -> pd.DataFrame:
    """One evaluation level's table as a report shows it: :data:`LEVEL_COLUMNS` (those present, at
    most MAX_SUMMARY_COLUMNS), indexed by method, rounded."""
    cols = [c for c in LEVEL_COLUMNS.get(level, df.columns) if c in df.columns]
    cols = cols[:MAX_SUMMARY_COLUMNS]
    out = df[cols].round(digits)
    return out.set_index("method") if "method" in out else out


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
    colors = method_colors(methods)
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
    colors = method_colors(methods)
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
            ax.set_ylabel(f"mean {m}", fontsize=8)
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


_register_saved_png_display()  # in a notebook kernel; a no-op elsewhere
