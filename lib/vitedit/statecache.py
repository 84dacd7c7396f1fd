"""An edited model evaluated from the base model's hidden states (the benchmark's fast path).

An edit of layers ``L1 < L2 < ...`` leaves the patch embedding and blocks ``0 .. L1-1`` as they
were, so on any image the hidden states entering block ``L1`` are the base model's. A
:class:`StateCache` keeps them in memory, per image set and by the batches of
:meth:`vitedit.models.Runner.probs`, and runs only blocks ``L1 ..`` of the edited model: the same
operations on the same tensors as a full forward pass, so the probabilities are identical bit for
bit (``tests/test_statecache.py`` checks it on every kind of edit). A grid over one layer set then
costs its upper blocks, not the whole network. (A head edit, or the base model itself, is served
by :mod:`vitedit.predcache`'s cached pre-logit features.) Which block an edit starts at is read
from the weights themselves (:func:`first_changed_block`), so no method has to say it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .locate.tracing import forward_from
from .models import Runner
from .predcache import images_key, prediction_key

KEEP_RESULTS = 32  # probabilities kept per cache: one experiment's sets, before and after


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted hidden state is read."""


def block_of(name: str, n_blocks: int) -> int:
    """The first block a parameter's change reaches: ``blocks.i.*`` -> i; the final norm and the
    head -> ``n_blocks`` (after every block); anything else (embeddings, tokens) -> 0."""
    if name.startswith("blocks."):
        return int(name.split(".")[1])
    if name.split(".")[0] in ("norm", "fc_norm", "head", "head_drop"):
        return n_blocks
    return 0


def first_changed_block(base, model) -> int | None:
    """The lowest block whose input differs between ``base`` and ``model`` on every image (0 when
    the embeddings changed); ``n_blocks`` when only the final norm / head changed or nothing did;
    None when the two are not the same architecture."""
    a, b = base.state_dict(), model.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return None
    n = len(base.blocks)
    changed = [block_of(k, n) for k in a if not torch.equal(a[k], b[k].to(a[k].device))]
    return min(changed, default=n)


@dataclass(frozen=True)
class CachingRunner(Runner):
    """A :class:`~vitedit.models.Runner` that keeps the pre-logit features it computed, by the
    model's backbone weights and the images (:func:`vitedit.predcache.prediction_key`): a head
    editor's features of the statistics samples and errors are computed once per unit, not once
    per grid point. The same tensors as a fresh computation (a copy is returned)."""

    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def pre_logits(self, model, images) -> torch.Tensor:
        key = prediction_key(model, images, self, skip="head.")
        if key not in self.memo:
            self.memo[key] = super().pre_logits(model, images)
        return self.memo[key].clone()


# the base model's kept hidden states at most (a set that would go over is run whole instead)
STATES_MAX_BYTES = 2 * 2**30


class StateCache:
    """The base model's hidden states entering one block, per image set, in memory.

    Only the states of the block last asked for are kept (a grid visits one layer set after
    another), so memory is one block's states of the evaluated sets, at most ``max_bytes``
    (:data:`STATES_MAX_BYTES`). ``probs(model, images)`` returns None for a set that would go over,
    and when the model is not an edit of the base's blocks (another architecture, an edit of the
    embeddings, or of nothing but the final norm and head); the caller then runs the model
    another way (:func:`vitedit.predcache.cached_probs`).
    """

    def __init__(self, base, runner: Runner, max_bytes: int | None = None):
        self.base, self.runner = base.eval(), runner
        self.max_bytes = STATES_MAX_BYTES if max_bytes is None else max_bytes
        self.block: int | None = None
        self.states: dict[str, list[torch.Tensor]] = {}
        # the last probabilities computed, by model weights and images: an edit's FT-Train sets
        # are read by its summary (04/05) and again by the 4-level evaluation (06)
        self.results: dict[str, np.ndarray] = {}
        self.hits = self.misses = self.over_cap = 0

    def clear(self) -> None:
        """Forget the kept states (their memory is freed)."""
        self.block, self.states, self.results = None, {}, {}

    def kept_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for out in self.states.values() for t in out)

    def fits(self, images: np.ndarray, block: int) -> bool:
        """Whether ``images``' states at ``block`` are kept, or would fit under ``max_bytes``
        beside those kept (one image's states: tokens x width x 4 bytes; 19 KB for the default
        model, so 2 GiB holds ~110 k images: TissueMNIST's sets would not all fit)."""
        kept = self.kept_bytes() if block == self.block else 0
        if block == self.block and images_key(images) in self.states:
            return True
        tokens = self.base.patch_embed.num_patches + getattr(self.base, "num_prefix_tokens", 1)
        return kept + len(images) * tokens * self.base.embed_dim * 4 <= self.max_bytes

    def _states(self, images: np.ndarray, block: int) -> list[torch.Tensor]:
        """The base model's hidden states entering ``block``, batch by batch as
        :meth:`Runner.probs` runs them."""
        if block != self.block:
            self.block, self.states = block, {}
        key = images_key(images)
        if key in self.states:
            self.hits += 1
            return self.states[key]
        self.misses += 1
        grab: dict[str, torch.Tensor] = {}

        def keep(module, args):
            grab["h"] = args[0].detach()
            raise _Stop

        handle = self.base.blocks[block].register_forward_pre_hook(keep)
        out = []
        try:
            for sl in self.runner.batches(len(images)):
                x = self.runner.inputs(images[sl])
                with torch.no_grad(), self.runner.autocast():
                    try:
                        self.base(x)
                    except _Stop:
                        pass
                out.append(grab.pop("h"))
        finally:
            handle.remove()
        self.states[key] = out
        return out

    def probs(self, model, images: np.ndarray) -> np.ndarray | None:
        """``model``'s probabilities on ``images`` from the base's hidden states at the first block
        the edit changed (None: run the model whole)."""
        block = first_changed_block(self.base, model)
        if block is None or not 0 < block < len(self.base.blocks):
            return None
        n_cls = model.num_classes
        if len(images) == 0:
            return np.zeros((0, n_cls), dtype=np.float32)
        key = prediction_key(model, images, self.runner)
        if key in self.results:
            return self.results[key].copy()
        if not self.fits(images, block):  # over the memory cap: the caller runs the model whole
            self.over_cap += 1
            return None
        was_training = model.training
        model.eval()
        try:
            logits = []
            for h in self._states(images, block):
                with torch.no_grad(), self.runner.autocast():
                    logits.append(forward_from(model, h, block).float().cpu())
        finally:
            model.train(was_training)
        probs = torch.softmax(torch.cat(logits), -1).numpy()
        if len(self.results) >= KEEP_RESULTS:
            self.results.pop(next(iter(self.results)))
        self.results[key] = probs
        return probs.copy()
