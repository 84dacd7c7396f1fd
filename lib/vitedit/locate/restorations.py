"""What causal tracing restores: a module's clean output (``block``, ``mlp``, ``attn``) at some
layers on the tokens of a scope (every token, CLS, the patches, or one region of the patch grid)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("block", "mlp", "attn")
SCOPES = ("all", "cls", "patches")


class LocateError(ValueError):
    pass


@dataclass(frozen=True)
class Restoration:
    """Put the clean activation of ``kind`` at ``layers`` back, on the tokens of ``scope``."""

    layers: tuple[int, ...]
    kind: str
    scope: str

    @property
    def layer(self) -> int:  # the centre of a window
        return self.layers[len(self.layers) // 2]


# --------------------------------------------------------------------------- building blocks
def module_for(model: torch.nn.Module, layer: int, kind: str) -> torch.nn.Module:
    blk = model.blocks[layer]
    return {"block": blk, "mlp": blk.mlp, "attn": blk.attn}[kind]


REGION_MAX = "region_max"  # the per-layer best patch region of a token x layer trace (a ranking)


def region_scopes(grid: int) -> list[str]:
    """The scopes of a token x layer trace: CLS, then a ``grid`` x ``grid`` grid of patch groups
    (``g{grid}r{row}c{col}``, row-major from the image's top left)."""
    return ["cls"] + [f"g{grid}r{i}c{j}" for i in range(grid) for j in range(grid)]


def parse_region(scope: str) -> tuple[int, int, int] | None:
    """``(grid, row, col)`` of a region scope, None for the token scopes (all, cls, patches)."""
    if not scope.startswith("g") or "r" not in scope or "c" not in scope:
        return None
    try:
        g, rest = scope[1:].split("r", 1)
        r, c = rest.split("c", 1)
        return int(g), int(r), int(c)
    except ValueError:
        return None


def region_patches(n_patches: int, grid: int, row: int, col: int) -> np.ndarray:
    """Patch indices (row-major) of one region of a square patch grid split into ``grid`` x ``grid``
    near-equal groups of rows and columns."""
    side = int(round(n_patches**0.5))
    if side * side != n_patches:
        raise LocateError(f"region tracing needs a square patch grid, got {n_patches} patches")
    if not 1 <= grid <= side:
        raise LocateError(
            f"trace_regions {grid} must be between 1 and the patch grid's side ({side})"
        )
    rows = np.array_split(np.arange(side), grid)[row]
    cols = np.array_split(np.arange(side), grid)[col]
    return (rows[:, None] * side + cols[None, :]).ravel()


def token_mask(n_tokens: int, scope: str, n_prefix: int = 1) -> torch.Tensor:
    m = torch.zeros(n_tokens, dtype=torch.bool)
    region = parse_region(scope)
    if region is not None:
        m[n_prefix + region_patches(n_tokens - n_prefix, *region)] = True
    elif scope == "all":
        m[:] = True
    elif scope == "cls":
        m[0] = True
    else:
        m[n_prefix:] = True
    return m


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, ...]:
    """Consecutive layers centred on ``layer`` (ROME's window), clipped to the model."""
    lo = max(0, layer - window // 2)
    hi = min(n_layers, layer - (-window // 2))
    return tuple(range(lo, hi))


def region_restorations(n_layers: int, grid: int) -> list[Restoration]:
    """ROME's token x layer trace for a ViT: the block output (hidden state) restored at CLS or at
    one patch region, at one layer at a time."""
    return [
        Restoration((layer,), "block", scope)
        for scope in region_scopes(grid)
        for layer in range(n_layers)
    ]


def restorations(
    n_layers: int, kinds: Sequence[str] = KINDS, scopes: Sequence[str] = ("all",), window: int = 1
) -> list[Restoration]:
    """Every (layer, kind, scope) restoration; ``window`` > 1 widens mlp/attn ones."""
    check_choices(kinds, scopes, n_layers)
    out = []
    for scope in scopes:
        for kind in kinds:
            for layer in range(n_layers):
                layers = (
                    window_layers(layer, window, n_layers)
                    if kind != "block" and window > 1
                    else (layer,)
                )
                out.append(Restoration(layers, kind, scope))
    return out


def check_choices(
    kinds: Iterable[str], scopes: Iterable[str], n_layers: int, layers: Iterable[int] = ()
) -> None:
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise LocateError(f"unknown trace kind(s) {bad}; choose from {list(KINDS)}")
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise LocateError(f"unknown token scope(s) {bad}; choose from {list(SCOPES)}")
    bad = [li for li in layers if not 0 <= li < n_layers]
    if bad:
        raise LocateError(
            f"layer index(es) {bad} out of range: the model has layers 0..{n_layers - 1}"
        )
