"""Notebook 03: the model's errors on Edit-Discovery, their causal tracing, ASTRA's patch
attribution, and the layers handed to editing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import evaluation, locate, selection
from .context import Context


@dataclass
class Tracing:
    """The tracing of the errors (``layer_importance.csv``) and its per-layer statistics."""

    importance: pd.DataFrame
    stats: pd.DataFrame
    noise_std: float
    noise_ratio: float | None  # noise std / the patch embeddings' std (noise_scale, in effect)
    noise: Any  # (num_ablations, n_patches, dim) noise added to the patch embeddings
    restores: list
    region_restores: list = field(default_factory=list)  # the token x layer trace (trace_regions)
    seconds_per_error: float | None = None
    region_seconds_per_error: float | None = None

    @property
    def message(self) -> str:
        msg = (
            f"noise std {self.noise_std:.4f}; {len(self.restores)} restorations x {len(self.noise)} noisy "
            f"copies per sample"
        )
        if self.seconds_per_error is not None:
            msg += f" ({self.seconds_per_error:.2f} s per error)"
        if self.region_restores:
            cost = self.region_seconds_per_error
            msg += f"; token x layer trace: {len(self.region_restores)} restorations" + (
                f" ({cost:.2f} s per error)" if cost is not None else ""
            )
        return msg


def trace(ctx: Context, err: Errors) -> Tracing:
    """Causal tracing of the traced Edit-Discovery errors: noise scaled to FT-Train's patch
    embeddings, every restoration the parameters ask for; writes ``layer_importance.csv`` and
    ``layer_statistics.csv``."""
    labels, pred, errors = err.labels, err.pred, err.traced
    p, model = ctx.params, ctx.model
    n_layers = len(model.blocks)
    n_ft = len(ctx.split.indices["ft_train"])
    ft_images = ctx.split.view(
        ctx.data, "ft_train", np.arange(min(p["noise_samples"] or n_ft, n_ft))
    )
    spread = locate.patch_embedding_std(model, ctx.runner, ft_images)
    std = p["noise_std"] or p["noise_scale"] * spread
    noise = locate.make_noise(
        p["num_ablations"],
        (model.patch_embed.num_patches, model.embed_dim),
        std,
        p["seed"] if p["noise_seed"] is None else p["noise_seed"],
    )
    restores = locate.restorations(n_layers, p["trace_kinds"], p["trace_scopes"], p["trace_window"])
    regions = locate.region_restorations(n_layers, p["trace_regions"]) if p["trace_regions"] else []

    samples = locate.Traced(
        ctx.split.images(ctx.data, "edit_discovery"),
        labels,
        pred,
        errors,
        ctx.split.indices["edit_discovery"],
    )

    def run(rs: list) -> tuple[pd.DataFrame, float]:
        t0 = time.perf_counter()
        setup = locate.TraceSetup(rs, noise, p["min_total_effect"], p["trace_max_rows"])
        out = locate.trace_errors(model, ctx.runner, samples, setup, p["progress"])
        return out, time.perf_counter() - t0

    importance, seconds = run(restores)
    region_seconds = None
    if regions:
        region_imp, region_seconds = run(regions)
        importance = pd.concat([importance, region_imp], ignore_index=True)
    stats = locate.layer_statistics(
        pd.concat([importance, locate.region_max_effects(importance)], ignore_index=True)
    )
    importance.to_csv(ctx.run_dir / "layer_importance.csv", index=False)
    stats.to_csv(ctx.run_dir / "layer_statistics.csv", index=False)
    n = len(errors)
    return Tracing(
        importance=importance,
        stats=stats,
        noise_std=float(std),
        noise_ratio=float(std / spread) if spread else None,
        noise=noise,
        restores=restores,
        region_restores=regions,
        seconds_per_error=seconds / n if n else None,  # no error traced: no cost per error
        region_seconds_per_error=region_seconds / n if n and region_seconds is not None else None,
    )


@dataclass
class Errors:
    """The model's errors on Edit-Discovery: all of them, and the first ``max_samples`` that are
    traced (of those the run edits: :func:`vitedit.selection.skipped_errors`)."""

    labels: np.ndarray
    pred: np.ndarray
    all: np.ndarray  # positions in Edit-Discovery
    traced: np.ndarray

    @property
    def message(self) -> str:
        return (
            f"{len(self.all)} of {len(self.labels)} Edit-Discovery samples misclassified; "
            f"tracing {len(self.traced)}"
        )

    def crosstab(self) -> pd.DataFrame:
        """Errors by (true, predicted) class."""
        return pd.crosstab(
            pd.Series(self.labels[self.all], name="true"),
            pd.Series(self.pred[self.all], name="predicted"),
        )


def find_errors(ctx: Context) -> Errors:
    p = ctx.params
    y, pred, _ = evaluation.predictions(ctx.evaluator, ctx.model, "edit_discovery")
    return Errors(
        y,
        pred,
        selection.select_errors(y, pred, None),
        # with edit_selection: second, the errors that run edits (the first ones stay held out)
        selection.select_errors(y, pred, p["max_samples"], selection.skipped_errors(p)),
    )


def attribution_maps(ctx: Context, err: Errors) -> tuple[np.ndarray, list]:
    """Patch attribution (ASTRA) of the first ``attribution_samples`` traced errors: their positions
    and one map each (seeded by ``seed`` + position)."""
    p = ctx.params
    images = ctx.split.images(ctx.data, "edit_discovery")
    picked = err.traced[: p["attribution_samples"]]
    maps = [
        locate.patch_attribution(
            ctx.model,
            ctx.runner,
            images[s],
            int(err.pred[s]),
            n_masks=p["attribution_masks"],
            keep_prob=p["attribution_keep_prob"],
            alpha=p["attribution_alpha"],
            seed=p["seed"] + int(s),
        )
        for s in picked
    ]
    return picked, maps


def hand_over_layers(ctx: Context, tr: Tracing, err: Errors, seconds: float) -> tuple[dict, dict]:
    """The edit layers (``edit_layers`` > tracing > the last three) and the tracing's summary;
    writes ``edit_layers.json`` and ``locate_summary.json``."""
    p = ctx.params
    n_layers = len(ctx.model.blocks)
    choice = locate.edit_layers_from(tr.stats, n_layers, p, ctx.run_dir)
    summary = locate.summarize(
        tr.importance,
        n_errors_total=len(err.all),
        n_set=len(err.labels),
        noise_std=tr.noise_std,
        noise_ratio=tr.noise_ratio,
        n_restorations=len(tr.restores),
        choice=choice,
        seconds=seconds,
        n_layers=n_layers,
    )
    summary["trace_seconds_per_error"] = tr.seconds_per_error
    summary["trace_regions"] = p["trace_regions"]
    summary["region_trace_seconds_per_error"] = tr.region_seconds_per_error
    locate.save_summary(ctx.run_dir, summary)
    return choice, summary
