"""Causal tracing for ViT classifiers (ROME-style; the original system called it ASTRA-style).

For an error (a sample the model misclassifies), the patch embeddings are corrupted with
Gaussian noise (patch positions only, never CLS) and, one restoration at a time, a clean
activation is put back into the corrupted run: a block's output hidden state (``block``),
its MLP output (``mlp``) or its attention output (``attn``), at token scope ``all``, ``cls`` or
``patches``, optionally over a window of consecutive layers (``mlp``/``attn``). The indirect
effect of a restoration is IE = p(restored) - p(corrupted) for the class the model predicts
on the clean input; TE = p(clean) - p(corrupted) is the total effect.

Every restoration of a sample (restorations x noisy copies) runs in batched forward passes with
hooks, resuming from the shared corrupted run at the first restored layer; :func:`trace_reference`
restores one thing per full forward pass of one noisy copy and exists to check it.

Known trivial case: restoring the final block's CLS state reproduces the clean output exactly
(the head reads only that state), so ``block`` rankings always favour the last layers; the layers
handed to editing are therefore ranked from the ``mlp`` kind by default.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import models, paths
from .evaluation import t_half_width
from .progress import bar as progress_bar

KINDS = ("block", "mlp", "attn")
SCOPES = ("all", "cls", "patches")
EDIT_LAYERS_FILE = "edit_layers.json"
SUMMARY_FILE = "locate_summary.json"
IMPORTANCE_COLUMNS = [
    "sample",
    "official_index",
    "true_label",
    "pred_label",
    "layer",
    "layers",
    "kind",
    "scope",
    "p_clean",
    "p_corrupted",
    "p_restored",
    "ie",
    "te",
    "te_valid",
    "norm_effect",
    "p_true_clean",
    "p_true_corrupted",
    "p_true_restored",
    "ie_true",
]
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


@torch.inference_mode()
def patch_embedding_std(
    model, images: np.ndarray, cfg: models.ModelConfig, batch_size: int = 256, device="cpu"
) -> float:
    """Empirical standard deviation of the patch embeddings (all elements) over ``images``."""
    s = s2 = n = 0.0
    model.eval()
    for sl in models.iter_batches(len(images), batch_size):
        e = model.patch_embed(models.preprocess(images[sl], cfg, device)).double()
        s += float(e.sum())
        s2 += float((e * e).sum())
        n += e.numel()
    if n == 0:
        raise LocateError("cannot estimate the noise scale from an empty set")
    return float(np.sqrt(max(s2 / n - (s / n) ** 2, 0.0)))


def make_noise(n_ablations: int, shape: tuple[int, int], std: float, seed: int) -> torch.Tensor:
    """``n_ablations`` Gaussian noise tensors of ``shape`` (patches, dim), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n_ablations, *shape), generator=g) * std


@contextlib.contextmanager
def hooks(pairs: Iterable[tuple[torch.nn.Module, Any]]):
    handles = [m.register_forward_hook(f) for m, f in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _noise_hook(noise_rows: torch.Tensor):
    def f(module, inputs, out):
        return out + noise_rows.to(out.dtype)

    return f


def _restore_hook(clean: torch.Tensor, mask: torch.Tensor):
    """Replace ``out[row, token]`` by ``clean[token]`` where ``mask[row, token]``."""

    def f(module, inputs, out):
        return torch.where(mask.unsqueeze(-1), clean.unsqueeze(0).to(out.dtype), out)

    return f


@torch.inference_mode()
def clean_run(
    model, x: torch.Tensor, needed: Iterable[tuple[int, str]]
) -> tuple[torch.Tensor, dict]:
    """Probabilities of the clean input and the clean outputs of the ``needed`` (layer, kind) modules."""
    cache: dict[tuple[int, str], torch.Tensor] = {}

    def keep(key):
        def f(module, inputs, out):
            cache[key] = out[0].detach().clone()

        return f

    with hooks((module_for(model, li, k), keep((li, k))) for li, k in set(needed)):
        probs = torch.softmax(model(x).float(), -1)[0]
    return probs, cache


# --------------------------------------------------------------------------- tracing
@torch.inference_mode()
def corrupted_run(model, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Probabilities (A, C) of the noisy copies of ``x``, and per layer l the states (A, T, D) of
    that run: ``(l, "in")`` the block's input, ``(l, "attn")``, ``(l, "mlp")``, ``(l, "block")``."""
    cache: dict[tuple[int, str], torch.Tensor] = {}

    def keep_in(li):
        def f(module, args):
            cache[(li, "in")] = args[0]

        return f

    def keep(key):
        def f(module, inputs, out):
            cache[key] = out

        return f

    pairs = [(model.patch_embed, _noise_hook(noise.to(x.device)))]
    pairs += [
        (module_for(model, li, k), keep((li, k))) for li in range(len(model.blocks)) for k in KINDS
    ]
    handles = [blk.register_forward_pre_hook(keep_in(li)) for li, blk in enumerate(model.blocks)]
    try:
        with hooks(pairs):
            probs = torch.softmax(model(x.expand(noise.shape[0], -1, -1, -1)).float(), -1)
    finally:
        for h in handles:
            h.remove()
    return probs, cache


def _fully_clean(r: Restoration) -> bool:
    """Restoring every token of a block's output makes the state clean, whatever the noise:
    one row stands for all noisy copies (exactly: they are identical from there on)."""
    return r.kind == "block" and r.scope == "all"


def _chunks(items: list, sizes: list[int], max_rows: int):
    """Consecutive groups of ``items`` whose ``sizes`` add up to at most ``max_rows`` (one item at least)."""
    group, total = [], 0
    for item, size in zip(items, sizes):
        if group and total + size > max_rows:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group


def restored_output(
    model, layer: int, kind: str, mask: torch.Tensor, clean: dict, corrupt: dict, rows: int
) -> torch.Tensor:
    """Output (rows, T, D) of block ``layer`` in the corrupted run when ``kind``'s clean output is put
    back on the tokens of ``mask`` (T,): computed from the corrupted run's cached states, so only
    what the restoration changes is recomputed (a timm ``Block`` in eval mode: x + ls(f(norm(x))))."""
    m = mask.view(1, -1, 1)
    blk = model.blocks[layer]
    if kind == "block":
        return torch.where(
            m, clean[(layer, "block")].unsqueeze(0), corrupt[(layer, "block")][:rows]
        )
    h = corrupt[(layer, "in")][:rows]
    if kind == "attn":
        mid = h + blk.drop_path1(
            blk.ls1(
                torch.where(m, clean[(layer, "attn")].unsqueeze(0), corrupt[(layer, "attn")][:rows])
            )
        )
        return mid + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(mid))))
    mid = h + blk.drop_path1(blk.ls1(corrupt[(layer, "attn")][:rows]))
    return mid + blk.drop_path2(
        blk.ls2(torch.where(m, clean[(layer, "mlp")].unsqueeze(0), corrupt[(layer, "mlp")][:rows]))
    )


def _cls_only_ok(model) -> bool:
    """Whether the last block may be computed for the CLS query only (the head reads only CLS)."""
    attn = model.blocks[-1].attn
    return (
        getattr(model, "global_pool", None) == "token"
        and getattr(model, "attn_pool", None) is None
        and model.num_prefix_tokens == 1
        and getattr(attn, "gate", None) is None
        and all(
            hasattr(attn, n)
            for n in ("qkv", "q_norm", "k_norm", "norm", "proj", "num_heads", "head_dim")
        )
    )


def last_block_cls(blk, h: torch.Tensor) -> torch.Tensor:
    """Output (B, 1, D) at the CLS token of a timm ``Block`` in eval mode; keys and values of every
    token, query, projection and MLP of CLS only (the rest of the last block is never read)."""
    b, n, _ = h.shape
    attn = blk.attn
    qkv = (
        attn.qkv(blk.norm1(h))
        .reshape(b, n, 3, attn.num_heads, attn.head_dim)
        .permute(2, 0, 3, 1, 4)
    )
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    o = attn.proj(attn.norm(o.transpose(1, 2).reshape(b, 1, -1)))
    x = h[:, :1] + blk.drop_path1(blk.ls1(o))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def forward_from(
    model, h: torch.Tensor, first_block: int, cls_only_last: bool = False
) -> torch.Tensor:
    """Logits of hidden states ``h`` entering block ``first_block`` (timm ViT's tail of forward);
    with ``cls_only_last`` the last block computes the CLS token only."""
    last = len(model.blocks) - 1
    for i in range(first_block, len(model.blocks)):
        h = (
            last_block_cls(model.blocks[i], h)
            if cls_only_last and i == last
            else model.blocks[i](h)
        )
    return model.forward_head(model.norm(h))


@torch.inference_mode()
def trace_sample(
    model,
    x: torch.Tensor,
    restores: Sequence[Restoration],
    noise: torch.Tensor,
    max_rows: int = 2048,
) -> dict[str, torch.Tensor]:
    """Batched tracing of one preprocessed image ``x`` (1, 3, H, W).

    Returns class probabilities: ``clean`` (C,), ``corrupted`` (C,) and ``restored`` (R, C), each
    averaged over the noisy copies in ``noise`` (A, patches, dim). The corrupted run is computed
    once and its states are kept. A restoration whose first layer is l starts from the corrupted
    run's block l with only what the restoration changes recomputed (:func:`restored_output`);
    restorations starting at the same layer then run together through the later blocks (rows =
    restoration x noisy copy, at most ``max_rows`` per pass), hooks putting clean activations back
    for windows. Restoring every token of a block's output needs one row (the state is clean), and
    the last block computes only the CLS token that the head reads (:func:`last_block_cls`).
    """
    model.eval()
    a = noise.shape[0]
    n_tokens = noise.shape[1] + model.num_prefix_tokens
    needed = {(li, r.kind) for r in restores for li in r.layers}
    p_clean, clean = clean_run(model, x, needed)
    p_corrupt, corrupt = corrupted_run(model, x, noise)
    scope_masks = {
        s: token_mask(n_tokens, s, model.num_prefix_tokens).to(x.device)
        for s in {*SCOPES, *(r.scope for r in restores)}
    }
    restored = torch.empty(len(restores), p_clean.shape[0])
    cls_ok = _cls_only_ok(model)
    by_first: dict[int, list[int]] = {}
    for i, r in enumerate(restores):
        by_first.setdefault(min(r.layers), []).append(i)
    for first, idx in by_first.items():
        for chunk in _chunks(idx, [1 if _fully_clean(restores[i]) else a for i in idx], max_rows):
            sizes = [1 if _fully_clean(restores[i]) else a for i in chunk]
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            masks: dict[tuple[int, str], torch.Tensor] = {}  # window layers after the first
            for gi, ri in enumerate(chunk):
                r = restores[ri]
                for li in r.layers[1:]:
                    m = masks.setdefault(
                        (li, r.kind),
                        torch.zeros(int(offsets[-1]), n_tokens, dtype=torch.bool, device=x.device),
                    )
                    m[offsets[gi] : offsets[gi + 1]] |= scope_masks[r.scope]
            h = torch.cat(
                [
                    restored_output(
                        model,
                        first,
                        restores[ri].kind,
                        scope_masks[restores[ri].scope],
                        clean,
                        corrupt,
                        n,
                    )
                    for ri, n in zip(chunk, sizes)
                ]
            )
            pairs = [
                (module_for(model, li, k), _restore_hook(clean[(li, k)], m))
                for (li, k), m in masks.items()
            ]
            cls_only = cls_ok and all(
                li < len(model.blocks) - 1 for li, _ in masks
            )  # no hook in the last block
            with hooks(pairs):
                probs = torch.softmax(forward_from(model, h, first + 1, cls_only).float(), -1).cpu()
            for gi, ri in enumerate(chunk):
                restored[ri] = probs[offsets[gi] : offsets[gi + 1]].mean(0)
    return {"clean": p_clean.cpu(), "corrupted": p_corrupt.mean(0).cpu(), "restored": restored}


@torch.inference_mode()
def trace_reference(
    model, x: torch.Tensor, restores: Sequence[Restoration], noise: torch.Tensor
) -> dict:
    """The obviously-correct tracer: one forward pass per (restoration, noisy copy)."""
    model.eval()
    n_tokens = noise.shape[1] + model.num_prefix_tokens
    needed = {(li, r.kind) for r in restores for li in r.layers}
    p_clean, cache = clean_run(model, x, needed)

    def run(r: Restoration | None) -> torch.Tensor:
        ps = []
        for i in range(noise.shape[0]):
            pairs = [(model.patch_embed, _noise_hook(noise[i : i + 1].to(x.device)))]
            if r is not None:
                m = token_mask(n_tokens, r.scope, model.num_prefix_tokens).to(x.device).unsqueeze(0)
                pairs += [
                    (module_for(model, li, r.kind), _restore_hook(cache[(li, r.kind)], m))
                    for li in r.layers
                ]
            with hooks(pairs):
                ps.append(torch.softmax(model(x).float(), -1)[0])
        return torch.stack(ps).mean(0)

    return {
        "clean": p_clean,
        "corrupted": run(None),
        "restored": torch.stack([run(r) for r in restores]),
    }


def effects_table(
    result: Mapping[str, torch.Tensor],
    restores: Sequence[Restoration],
    pred: int,
    true: int,
    min_total_effect: float,
) -> pd.DataFrame:
    """One row per restoration: probabilities of the predicted and the true class, IE, TE, IE/TE."""
    pc, px, pr = result["clean"], result["corrupted"], result["restored"]
    te = float(pc[pred] - px[pred])
    valid = abs(te) >= min_total_effect
    rows = []
    for r, p in zip(restores, pr):
        ie = float(p[pred] - px[pred])
        rows.append(
            {
                "true_label": true,
                "pred_label": pred,
                "layer": r.layer,
                "layers": " ".join(map(str, r.layers)),
                "kind": r.kind,
                "scope": r.scope,
                "p_clean": float(pc[pred]),
                "p_corrupted": float(px[pred]),
                "p_restored": float(p[pred]),
                "ie": ie,
                "te": te,
                "te_valid": valid,
                "norm_effect": ie / te if valid else np.nan,
                "p_true_clean": float(pc[true]),
                "p_true_corrupted": float(px[true]),
                "p_true_restored": float(p[true]),
                "ie_true": float(p[true] - px[true]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- errors, statistics, selection
def select_errors(y_true: np.ndarray, y_pred: np.ndarray, max_samples: int | None) -> np.ndarray:
    """Positions of misclassified samples, in set order, at most ``max_samples`` (deterministic)."""
    err = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))
    return err if max_samples is None else err[:max_samples]


def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> list[tuple[int, int, int]]:
    """``(true, predicted, count)`` of the errors, most frequent first (ties: lower class ids)."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    err = y != p
    pairs, counts = np.unique(np.stack([y[err], p[err]], 1), axis=0, return_counts=True)
    out = [(int(t), int(q), int(c)) for (t, q), c in zip(pairs.reshape(-1, 2), counts)]
    return sorted(out, key=lambda r: (-r[2], r[0], r[1]))


def select_pair_errors(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    max_samples: int | None,
    pair: Sequence[int] | None = None,
    n_classes: int | None = None,
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The errors of one (true, predicted) pair, in set order, at most ``max_samples``: ``pair``,
    or the most frequent pair (deterministic). Returns the positions and the pair."""
    if pair is not None:
        pair = tuple(int(c) for c in pair)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise LocateError(
                f"edit_pair must be [true, predicted] with two different class ids, got {list(pair)}"
            )
        if n_classes is not None and not all(0 <= c < n_classes for c in pair):
            raise LocateError(
                f"edit_pair {list(pair)} names a class outside 0..{n_classes - 1} of this dataset"
            )
    else:
        pairs = confusion_pairs(y_true, y_pred)
        if not pairs:
            return np.array([], dtype=int), None
        pair = pairs[0][:2]
    y, p = np.asarray(y_true), np.asarray(y_pred)
    err = np.flatnonzero((y == pair[0]) & (p == pair[1]))
    if not len(err):
        common = ", ".join(f"[{t}, {q}] ({c})" for t, q, c in confusion_pairs(y, p)[:5])
        raise LocateError(
            f"edit_pair {list(pair)}: the model makes no such error on Edit-Discovery; its most "
            f"frequent pairs are {common or 'none (no errors)'}; choose one of them or leave "
            f"edit_pair empty for the most frequent"
        )
    return (err if max_samples is None else err[:max_samples]), pair


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
    edit_layers: Sequence[int] | None = None,
    num_edit_layers: int = 3,
    no_astra_layers: bool = False,
    rank_kind: str = "mlp",
    rank_scope: str = "all",
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
    choice = choose_edit_layers(
        stats,
        n_layers,
        p["edit_layers"],
        p["num_edit_layers"],
        p["no_astra_layers"],
        p["rank_kind"],
        p["rank_scope"],
    )
    save_edit_layers(run_dir, choice)
    return choice


def save_edit_layers(run_dir: Path, choice: dict) -> None:
    paths.atomic_write_text(Path(run_dir) / EDIT_LAYERS_FILE, json.dumps(choice, indent=2))


def load_edit_layers(run_dir: Path) -> dict:
    f = Path(run_dir) / EDIT_LAYERS_FILE
    if not f.is_file():
        raise LocateError(f"{f} not found: run notebook 03_locate (CLI: --stage locate) first")
    return json.loads(f.read_text())


# --------------------------------------------------------------------------- the whole stage
def trace_errors(
    model,
    cfg: models.ModelConfig,
    images: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    positions: np.ndarray,
    restores: Sequence[Restoration],
    noise: torch.Tensor,
    min_total_effect: float = 0.05,
    device="cpu",
    max_rows: int = 2048,
    progress: bool = False,
    official_index: np.ndarray | None = None,
) -> pd.DataFrame:
    """Trace every sample at ``positions`` of ``images``; the long table of ``layer_importance.csv``."""
    tables = []
    for pos in progress_bar(positions, desc="causal tracing: error", disable=not progress):
        x = models.preprocess(images[pos : pos + 1], cfg, device)
        res = trace_sample(model, x, restores, noise, max_rows)
        t = effects_table(res, restores, int(preds[pos]), int(labels[pos]), min_total_effect)
        t.insert(0, "sample", int(pos))
        t.insert(
            1,
            "official_index",
            int(official_index[pos]) if official_index is not None else int(pos),
        )
        tables.append(t)
    if not tables:
        return pd.DataFrame(columns=IMPORTANCE_COLUMNS)
    return pd.concat(tables, ignore_index=True)[IMPORTANCE_COLUMNS]


@torch.inference_mode()
def corrupted_view(
    model, cfg: models.ModelConfig, image: np.ndarray, noise: torch.Tensor
) -> np.ndarray:
    """The image a noisy copy amounts to, for display: the least-squares pixel perturbation whose
    patch embedding is ``noise`` (patches, dim), added to the normalised image and mapped back to
    [0, 1]. (The corruption itself lives in embedding space; this is only its picture.)"""
    pe = model.patch_embed.proj
    if not isinstance(pe, torch.nn.Conv2d) or pe.kernel_size != pe.stride:
        raise LocateError("corrupted_view needs a non-overlapping convolutional patch embedding")
    w = pe.weight.reshape(pe.out_channels, -1).double()  # (D, 3*p*p)
    delta = torch.linalg.lstsq(w, noise.double().T).solution.T  # (patches, 3*p*p)
    (ph, pw), (gh, gw) = pe.kernel_size, model.patch_embed.grid_size
    delta = delta.view(gh, gw, 3, ph, pw).permute(2, 0, 3, 1, 4).reshape(1, 3, gh * ph, gw * pw)
    x = models.preprocess(image[None], cfg) + delta.float()
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- patch attribution
@torch.inference_mode()
def patch_attribution(
    model,
    cfg: models.ModelConfig,
    image: np.ndarray,
    target: int,
    n_masks: int = 64,
    keep_prob: float = 0.5,
    seed: int = 0,
    alpha: float = 1e-3,
    device="cpu",
) -> np.ndarray:
    """Lasso attribution over patches (ASTRA): random keep-masks -> p(target) -> sparse linear fit.

    Dropped patches are set to 0 in the normalised image (the normalisation mean). The score is
    standardised before the fit, so ``alpha`` does not depend on the scale of the probabilities.
    Returns the coefficients on the patch grid (grid_h, grid_w), in units of probability:
    positive = the patch supports ``target``.
    """
    model.eval()
    gh, gw = model.patch_embed.grid_size
    x = models.preprocess(image[None], cfg, device)
    rng = np.random.default_rng(seed)
    masks = (rng.random((n_masks, gh * gw)) < keep_prob).astype(np.float32)
    ph, pw = x.shape[-2] // gh, x.shape[-1] // gw
    m = torch.from_numpy(masks).view(n_masks, 1, gh, gw).to(device)
    m = m.repeat_interleave(ph, 2).repeat_interleave(pw, 3)
    scores = torch.softmax(model(x * m).float(), -1)[:, target].cpu().numpy().astype(np.float64)
    sd = scores.std()
    if sd == 0:  # the masks change nothing: no patch matters
        return np.zeros((gh, gw))
    # lazy: scikit-learn's linear models add ~1.5 s to each process importing this module (the
    # kernels of 04-07 and the CLI's preflight), which never fit a Lasso
    from sklearn.linear_model import Lasso

    fit = Lasso(alpha=alpha, max_iter=10000).fit(masks, (scores - scores.mean()) / sd)
    return fit.coef_.reshape(gh, gw) * sd  # back in units of probability


def summarize(
    importance: pd.DataFrame,
    n_errors_total: int,
    n_set: int,
    noise_std: float,
    n_restorations: int,
    choice: dict,
    seconds: float,
    n_layers: int | None = None,
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
        + (
            ": the noise barely changes these predictions; a larger noise_scale (or noise_std) "
            "makes TE measurable for more of them"
            if share > 0.5
            else ""
        )
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
        "n_restorations": int(n_restorations),
        "edit_layers": choice["layers"],
        "edit_layers_source": choice["source"],
        "seconds": round(seconds, 2),
        "n_layers": n_layers,
        "message": msg,
    }


def save_summary(run_dir: Path, summary: dict) -> None:
    paths.atomic_write_text(Path(run_dir) / SUMMARY_FILE, json.dumps(summary, indent=2))
