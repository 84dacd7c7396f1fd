"""Figures and tables of notebook 03: the causal tracing of the errors, ASTRA's patch attribution
and the layers handed to editing."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import KIND_COLORS, _save, _show_image, class_labels

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
