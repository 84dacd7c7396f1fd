"""From the tracing's effects to the layers handed to editing: per-layer statistics of IE/TE with
confidence intervals, the choice of the edit layers, how well the tracing separates them, and
what 03 records (``edit_layers.json``, ``locate_summary.json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import paths
from ..budget import t_half_width
from .restorations import REGION_MAX, LocateError, check_choices, parse_region, region_scopes

EDIT_LAYERS_FILE = "edit_layers.json"
SUMMARY_FILE = "locate_summary.json"


STATISTICS_COLUMNS = [
    "kind",
    "scope",
    "layer",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n_used",
    "n_excluded",
    "mean_ie",
    "rank",
]


def layer_statistics(importance: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, scope, layer): mean/std/95% CI of IE/TE over samples with a usable TE; rank by mean."""
    if importance.empty:
        return pd.DataFrame(columns=STATISTICS_COLUMNS)
    rows = []
    for (kind, scope, layer), g in importance.groupby(["kind", "scope", "layer"], sort=True):
        v = g.loc[g.te_valid, "norm_effect"].to_numpy(float)
        n = len(v)
        mean = float(v.mean()) if n else np.nan
        std = float(v.std(ddof=1)) if n > 1 else np.nan
        half = t_half_width(v)
        rows.append(
            {
                "kind": kind,
                "scope": scope,
                "layer": int(layer),
                "mean": mean,
                "std": std,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "n_used": n,
                "n_excluded": int(len(g) - n),
                "mean_ie": float(g.ie.mean()),
            }
        )
    df = pd.DataFrame(rows)
    df["rank"] = df.groupby(["kind", "scope"])["mean"].rank(ascending=False, method="first")
    return df[STATISTICS_COLUMNS]


def region_max_effects(importance: pd.DataFrame) -> pd.DataFrame:
    """Per traced sample and layer, the strongest patch region of a token x layer trace (CLS left
    out): rows of kind ``block``, scope :data:`REGION_MAX`, that :func:`layer_statistics` ranks like
    any scope ("at which layer does one region of the image still carry the wrong decision")."""
    reg = importance[importance.scope.map(lambda s: parse_region(str(s)) is not None)]
    if reg.empty:
        return importance.iloc[0:0]
    key = ["sample", "layer"] if "sample" in reg else ["layer"]
    # the strongest region by IE/TE (by IE where TE is unusable: those rows are not averaged)
    score = reg.norm_effect.where(reg.te_valid.astype(bool), reg.ie).astype(float)
    best = reg.loc[score.groupby([reg[k] for k in key]).idxmax()].copy()
    best["scope"] = REGION_MAX
    return best


def region_grid_table(importance: pd.DataFrame, value: str = "norm_effect") -> pd.DataFrame:
    """Mean ``value`` over the traced samples (usable TE only for ``norm_effect``) as a
    (CLS + regions) x layer table of a token x layer trace."""
    reg = importance[
        importance.scope.map(lambda s: s == "cls" or parse_region(str(s)) is not None)
        & (importance.kind == "block")
        & ~importance.layers.astype(str).str.contains(" ")
    ]
    if value == "norm_effect":
        reg = reg[reg.te_valid]
    if reg.empty:
        return pd.DataFrame()
    t = reg.pivot_table(index="scope", columns="layer", values=value, aggfunc="mean")
    order = [s for s in region_scopes(_grid_of(t.index)) if s in t.index]
    return t.loc[order]


def region_tables(
    importance: pd.DataFrame, samples: Sequence[int]
) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]]:
    """The token x layer figure's tables: the mean IE/TE over every traced error, and the IE of
    each of ``samples``."""
    per = {int(s): region_grid_table(importance[importance["sample"] == s], "ie") for s in samples}
    return region_grid_table(importance), per


def _grid_of(scopes) -> int:
    grids = {parse_region(str(s))[0] for s in scopes if parse_region(str(s))}
    return max(grids) if grids else 0


def choose_edit_layers(
    stats: pd.DataFrame,
    n_layers: int,
    *,
    edit_layers: Sequence[int] | None,
    num_edit_layers: int,
    no_astra_layers: bool,
    rank_kind: str,
    rank_scope: str,
) -> dict:
    """Priority: explicit ``edit_layers`` > tracing (top ``num_edit_layers`` of ``rank_kind``) >
    the last three."""
    if edit_layers:
        check_choices([], [], n_layers, edit_layers)
        return {
            "layers": sorted(set(int(li) for li in edit_layers)),
            "source": "explicit",
            "reason": "edit_layers given in the parameters",
        }
    default = {"layers": list(range(max(0, n_layers - 3), n_layers)), "source": "default"}
    if no_astra_layers:
        return {**default, "reason": "no_astra_layers: tracing result disabled"}
    if rank_scope == REGION_MAX:  # the token x layer trace restores block outputs only
        rank_kind = "block"
    sel = (
        stats[(stats.kind == rank_kind) & (stats.scope == rank_scope)].dropna(subset=["mean"])
        if not stats.empty
        else stats
    )
    if sel.empty:
        return {
            **default,
            "reason": f"no usable tracing result for kind '{rank_kind}', scope '{rank_scope}' "
            f"(no errors, or every total effect too small)",
        }
    top = sel.sort_values(["mean", "layer"], ascending=[False, True]).head(num_edit_layers)
    return {
        "layers": sorted(int(li) for li in top.layer),
        "source": "tracing",
        "reason": f"top {num_edit_layers} layers by mean IE/TE of kind '{rank_kind}', scope '{rank_scope}'",
        "ranking": [
            {
                "layer": int(r.layer),
                "mean": float(r["mean"]),
                "ci_low": float(r.ci_low),
                "ci_high": float(r.ci_high),
                "n_used": int(r.n_used),
            }
            for _, r in sel.sort_values("mean", ascending=False).iterrows()
        ],
        "separation": separation(sel, [int(li) for li in top.layer]),
    }


def separation(stats: pd.DataFrame, chosen: Sequence[int]) -> dict:
    """How well the tracing separates the chosen layers from the rest (one kind and scope): the
    weakest chosen layer's 95 % CI against the strongest other layer's. ``separated`` only when the
    intervals do not overlap; otherwise the choice among the overlapping layers is not supported
    by the evidence, and ``message`` says so in words with the number of samples it rests on."""
    inside = stats[stats.layer.isin(chosen)]
    outside = stats[~stats.layer.isin(chosen)]
    n = int(inside.n_used.min()) if len(inside) else 0
    if inside.empty or outside.empty:
        return {
            "separated": None,
            "n_used": n,
            "message": "every layer is chosen: nothing to separate",
        }
    weak = inside.sort_values("ci_low").iloc[0]
    strong = outside.sort_values("ci_high", ascending=False).iloc[0]
    ok = bool(weak.ci_low > strong.ci_high)
    overlapping = sorted(int(li) for li in outside.layer[outside.ci_high >= weak.ci_low])
    msg = (
        f"chosen layers {sorted(chosen)} rest on {n} samples; the weakest chosen (layer "
        f"{int(weak.layer)}, mean {weak['mean']:.3f}, CI [{weak.ci_low:.3f}, {weak.ci_high:.3f}]) "
        + (
            f"is separated from every other layer (best other: layer {int(strong.layer)}, CI up to "
            f"{strong.ci_high:.3f})"
            if ok
            else f"overlaps layers {overlapping} (best other: layer {int(strong.layer)}, mean "
            f"{strong['mean']:.3f}, CI [{strong.ci_low:.3f}, {strong.ci_high:.3f}]): the tracing "
            f"does not separate them"
        )
    )
    return {
        "separated": ok,
        "n_used": n,
        "weakest_chosen": int(weak.layer),
        "strongest_other": int(strong.layer),
        "overlapping_layers": overlapping,
        "message": msg,
    }


def edit_layers_from(
    stats: pd.DataFrame, n_layers: int, p: Mapping[str, Any], run_dir: Path
) -> dict:
    """:func:`choose_edit_layers` with a run's parameters, saved as the run's ``edit_layers.json``."""
    keys = ("edit_layers", "num_edit_layers", "no_astra_layers", "rank_kind", "rank_scope")
    choice = choose_edit_layers(stats, n_layers, **{k: p[k] for k in keys})
    save_edit_layers(run_dir, choice)
    return choice


def save_edit_layers(run_dir: Path, choice: dict) -> None:
    paths.atomic_write_text(Path(run_dir) / EDIT_LAYERS_FILE, paths.json_text(choice))


def load_edit_layers(run_dir: Path) -> dict:
    f = Path(run_dir) / EDIT_LAYERS_FILE
    if not f.is_file():
        raise LocateError(f"{f} not found: run notebook 03_locate (CLI: --stage locate) first")
    return json.loads(f.read_text())


SWAMPING_RATIO = 30.0  # noise this many times the embeddings' spread leaves no image to restore


def noise_advice(noise_ratio: float | None) -> str:
    """Why most errors' total effect is too small to measure, by the noise's size: noise that
    swamps the image (every corrupted copy predicts the same, whatever is restored) needs a
    smaller noise_scale; noise that barely changes the prediction needs a larger one."""
    if noise_ratio is not None and noise_ratio > SWAMPING_RATIO:
        return (
            f": the noise ({noise_ratio:.3g}x the patch embeddings' spread) swamps the images, so "
            "restoring one layer cannot bring a prediction back; a smaller noise_scale (the "
            "default is 3) or noise_std makes TE measurable"
        )
    return (
        ": the noise barely changes these predictions; a larger noise_scale (or noise_std) "
        "makes TE measurable for more of them"
    )


def summarize(
    importance: pd.DataFrame,
    *,
    n_errors_total: int,
    n_set: int,
    noise_std: float,
    n_restorations: int,
    noise_ratio: float | None = None,
    choice: dict,
    seconds: float,
    n_layers: int | None,
) -> dict:
    """What ``locate_summary.json`` records; zero errors is a normal, explicit outcome."""
    per_sample = importance.drop_duplicates("sample") if not importance.empty else importance
    n_traced = int(len(per_sample))
    n_low_te = int((~per_sample.te_valid.astype(bool)).sum()) if n_traced else 0
    share = n_low_te / n_traced if n_traced else 0.0
    msg = (
        f"{n_errors_total} of {n_set} Edit-Discovery samples are misclassified; traced {n_traced}"
        + (
            f"; {n_low_te} ({share:.0%}) left out of normalised averages (|TE| too small)"
            if n_low_te
            else ""
        )
        + (noise_advice(noise_ratio) if share > 0.5 else "")
    )
    if n_errors_total == 0:
        msg = (
            f"the model classifies all {n_set} Edit-Discovery samples correctly: nothing to trace, "
            f"and later stages have nothing to edit"
        )
    return {
        "n_edit_discovery": int(n_set),
        "n_errors": int(n_errors_total),
        "n_traced": n_traced,
        "n_low_total_effect": n_low_te,
        "excluded_share": round(share, 4),
        "separation": choice.get("separation"),
        "noise_std": float(noise_std),
        "noise_ratio": None if noise_ratio is None else round(float(noise_ratio), 4),
        "n_restorations": int(n_restorations),
        "edit_layers": choice["layers"],
        "edit_layers_source": choice["source"],
        "seconds": round(seconds, 2),
        "n_layers": n_layers,
        "message": msg,
    }


def save_summary(run_dir: Path, summary: dict) -> None:
    paths.atomic_write_text(Path(run_dir) / SUMMARY_FILE, paths.json_text(summary))
