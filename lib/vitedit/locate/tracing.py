"""Causal tracing of a ViT classifier's errors (ROME-style; the original system called it
ASTRA-style).

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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..models import Runner
from .restorations import KINDS, SCOPES, LocateError, Restoration, module_for, token_mask


@torch.inference_mode()
def patch_embedding_std(model, runner: Runner, images: np.ndarray) -> float:
    """Empirical standard deviation of the patch embeddings (all elements) over ``images``."""
    s = s2 = n = 0.0
    model.eval()
    for sl in runner.batches(len(images)):
        e = model.patch_embed(runner.inputs(images[sl])).double()
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
