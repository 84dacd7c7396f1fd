"""How much a layer edit moves the outputs it should preserve: ‖ΔW k‖ / ‖W k‖ per preserved key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..columns import PRESERVATION_BOUND
from ..models import Runner
from .statistics import Target, module_of


@torch.no_grad()
def preservation_keys(
    model, runner: Runner, targets: list[Target], images: np.ndarray
) -> list[dict[Target, torch.Tensor]]:
    """The keys (inputs, every token) of each target projection of ``model`` on ``images``, one
    dict per inference batch: what :func:`preservation_error` measures an update on. They depend on
    the model the edit starts from, not on the edit, so a grid over a method's other settings
    computes them once (``LayerEditor`` keeps them in its statistics cache)."""
    grabs: dict[Target, torch.Tensor] = {}
    hooks = [
        module_of(model, layer, module).register_forward_pre_hook(
            lambda m, a, t=(layer, module): grabs.__setitem__(t, a[0])
        )
        for layer, module in targets
    ]
    out = []
    model.eval()
    try:
        for sl in runner.batches(len(images)):
            with runner.autocast():
                model(runner.inputs(images[sl]))
            out.append({t: grabs[t].float() for t in targets})
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def preservation_error(
    model,
    runner: Runner,
    deltas: dict[Target, torch.Tensor],
    images: np.ndarray,
    scope: str,
    keys: list[dict[Target, torch.Tensor]] | None = None,
) -> dict[str, dict]:
    """‖ΔW k‖ / ‖W k‖ per key of ``images`` at every edited projection of ``model`` (the model the
    edit started from: its keys are the ones the null space was built to protect).

    ``scope`` as for the statistics: ``cls`` the CLS keys, otherwise every token's key. Per target
    ``L{layer}.{module}``: the median, 95th percentile and maximum ratio over keys, the Frobenius
    ratio ‖ΔW K‖ / ‖W K‖, the number of keys, and the median over the CLS keys alone
    (``cls_median``: with ``cls+all`` the patch tokens are most keys, and damage to the CLS keys
    could hide in them). ``keys``: :func:`preservation_keys` of ``images`` computed before.
    """
    if keys is None:
        keys = preservation_keys(model, runner, list(deltas), images)
    ratios: dict[Target, list[torch.Tensor]] = {t: [] for t in deltas}
    cls_ratios: dict[Target, list[torch.Tensor]] = {t: [] for t in deltas}
    sums = {t: [0.0, 0.0] for t in deltas}
    for batch in keys:
        for t, dw in deltas.items():
            tokens = batch[t]  # (batch, tokens, in)
            k = tokens[:, 0] if scope == "cls" else tokens.reshape(-1, tokens.shape[-1])
            w = module_of(model, *t).weight.float()
            num = (k @ dw.to(k).T).norm(dim=1).cpu()
            den = (k @ w.T).norm(dim=1).cpu()
            ratios[t].append(num / den.clamp_min(1e-12))
            c = tokens[:, 0]  # the CLS keys alone: what the edit is solved on and the head reads
            cls_num, cls_den = (c @ dw.to(c).T).norm(dim=1), (c @ w.T).norm(dim=1)
            cls_ratios[t].append((cls_num / cls_den.clamp_min(1e-12)).cpu())
            sums[t][0] += float((num**2).sum())
            sums[t][1] += float((den**2).sum())
    out = {}
    for t, rs in ratios.items():
        r = torch.cat(rs).double() if rs else torch.empty(0, dtype=torch.float64)
        out[f"L{t[0]}.{t[1]}"] = {
            "median": float(r.median()) if len(r) else float("nan"),
            "p95": float(torch.quantile(r, 0.95)) if len(r) else float("nan"),
            "max": float(r.max()) if len(r) else float("nan"),
            "frobenius": float(np.sqrt(sums[t][0] / max(sums[t][1], 1e-300))),
            "n_keys": int(len(r)),
            "cls_median": float(torch.cat(cls_ratios[t]).median())
            if cls_ratios[t]
            else float("nan"),
        }
    return out


def preservation_summary(layer_info: Mapping[str, Mapping[str, Any]], guaranteed: bool) -> dict:
    """The worst layer's median preservation error, in-sample and held out, and whether it exceeds
    :data:`PRESERVATION_BOUND` (judged only for a null-space edit, ``guaranteed``: the others make
    no such promise and their error is reported, not flagged)."""
    out: dict[str, Any] = {"bound": PRESERVATION_BOUND}
    for where in ("insample", "heldout"):
        vals = [li.get(f"preservation_{where}_median") for li in layer_info.values()]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        out[f"{where}_median_max"] = max(vals) if vals else float("nan")
    worst = np.nanmax([out["insample_median_max"], out["heldout_median_max"], -np.inf])
    out["exceeds_bound"] = bool(worst > PRESERVATION_BOUND) if guaranteed else None
    return out
