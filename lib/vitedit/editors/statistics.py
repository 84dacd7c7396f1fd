"""The preserved keys' statistics: the second moment of the inputs of an edited projection over
the statistics samples, streamed, and cached on disk under a name that says what determined it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import checkpoints, models
from ..models import Runner
from ..params import digest
from ..progress import bar as progress_bar
from .base import EditError

MODULES = {"mlp": "mlp.fc2", "attn": "attn.proj"}
TOKEN_SCOPES = ("cls", "all", "cls+all")
Target = tuple[int, str]  # (layer, module): one edited projection


def module_of(model, layer: int, module: str) -> torch.nn.Linear:
    if module not in MODULES:
        raise EditError(f"unknown edit module '{module}'; choose from {list(MODULES)}")
    blk = model.blocks[layer]
    return blk.mlp.fc2 if module == "mlp" else blk.attn.proj


@torch.no_grad()
def key_second_moment(
    model, runner: Runner, images: np.ndarray, target: Target, scope: str, progress: bool = False
) -> tuple[torch.Tensor, int]:
    """Uncentred second moment E[k kᵀ] (float64) of the inputs of the projection ``target``,
    streamed over ``images``.

    ``scope``: ``cls`` (CLS token keys), ``all`` (every token), ``cls+all`` (the sum of both
    moments, so that CLS-only directions stay protected although patch tokens dominate ``all``).
    Returns the moment and the number of images.
    """
    if scope not in TOKEN_SCOPES:
        raise EditError(
            f"unknown statistics token scope '{scope}'; choose from {list(TOKEN_SCOPES)}"
        )
    layer, module = target
    lin = module_of(model, layer, module)
    d = lin.in_features
    acc = {
        "cls": torch.zeros(d, d, dtype=torch.float64),
        "all": torch.zeros(d, d, dtype=torch.float64),
    }
    count = {"cls": 0, "all": 0}
    grab: dict[str, torch.Tensor] = {}
    h = lin.register_forward_pre_hook(lambda m, args: grab.__setitem__("k", args[0]))
    model.eval()
    try:
        for sl in progress_bar(
            list(runner.batches(len(images))),
            desc=f"keys L{layer} {module}",
            disable=not progress,
            leave=False,
        ):
            with runner.autocast():
                model(runner.inputs(images[sl]))
            k = grab["k"].double().cpu()
            if scope in ("cls", "cls+all"):
                c = k[:, 0]
                acc["cls"] += c.T @ c
                count["cls"] += c.shape[0]
            if scope in ("all", "cls+all"):
                a = k.reshape(-1, d)
                acc["all"] += a.T @ a
                count["all"] += a.shape[0]
    finally:
        h.remove()
    moment = torch.zeros(d, d, dtype=torch.float64)
    for s in ("cls", "all"):
        if count[s]:
            moment += acc[s] / count[s]
    return moment, len(images)


@dataclass(frozen=True)
class StatsCache:
    """Where key statistics are cached (``<checkpoint_dir>/stats``) and what they depend on besides
    the layer, module, scope and samples (the base checkpoint's sha256); and, in memory, the error
    targets this object's editors computed on that checkpoint (:meth:`target`): the in-process
    benchmark keeps one cache per checkpoint, so a grid over a layer set's strengths optimises
    each error's target once (the notebooks build a new cache per edit)."""

    folder: Path
    key: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict, compare=False, repr=False)

    def target(self, key: tuple, compute):
        """``compute()``'s result for ``key``, computed once per cache object."""
        if key not in self.targets:
            self.targets[key] = compute()
        return self.targets[key]


def cached_second_moment(
    model,
    runner: Runner,
    images: np.ndarray,
    target: Target,
    scope: str,
    cache: StatsCache | None,
    progress: bool = False,
) -> tuple[torch.Tensor, bool]:
    """:func:`key_second_moment`, cached on disk; returns the moment and whether it was cached.
    ``cache.key`` must say what determined ``images`` (e.g. their positions)."""

    def compute():
        return key_second_moment(model, runner, images, target, scope, progress)[0]

    if cache is None:
        return compute(), False
    layer, module = target
    name = (
        f"moment_L{layer}_{module}_{scope.replace('+', '-')}_n{len(images)}_"
        f"{digest(cache.key, 16)}.pt"
    )
    path = Path(cache.folder) / name

    def cached():
        return checkpoints.read_torch(
            path, "cached key statistics", "delete it: it is computed again", weights_only=True
        )

    if path.is_file():
        return cached(), True
    try:  # parallel sweep experiments: one computes, the others wait and load it
        lock = checkpoints.file_lock(path)
        lock.__enter__()
    except OSError as e:  # a read-only store: the statistics are computed, not cached
        print(
            f"note: cannot cache key statistics in {cache.folder} ({e}); computing them without "
            f"caching"
        )
        return compute(), False
    try:
        if path.is_file():
            return cached(), True
        moment = compute()
        models.save_atomic(moment, path)
    finally:
        lock.__exit__(None, None, None)
    return moment, False
