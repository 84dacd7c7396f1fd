"""What the classifier-head editors share: the head's inputs, and an ``edit()`` that does the
common work (copy the model, read the features of the statistics samples and of the errors, write
the new head, record timings, norms and the log), so each head editor implements only its
:meth:`HeadEditor.solve`. The backbone stays bit-identical; only ``model.head`` (weight and bias)
changes. Every head editor works on ``Θ = [W b]`` (classes × (features + 1)).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from ..models import Runner, head_logits
from .base import EditData, EditError, Editor, EditResult, edit_log, unchanged


@dataclass
class HeadFeatures:
    """Pre-logit features (float32, what ``model.head`` reads) of the statistics samples and of
    the errors, by the batches and precision of the evaluation (:meth:`Runner.pre_logits`)."""

    stats: torch.Tensor
    errors: torch.Tensor
    anchors: torch.Tensor | None = None  # of EditData.anchor_images, for editors that read them
    # what the solve reads as the errors' keys where they are not ``errors`` (an editor's
    # :meth:`HeadEditor.error_key_features`); the log judges ``errors`` either way
    error_views: torch.Tensor | None = None

    @staticmethod
    def keys(f: torch.Tensor) -> torch.Tensor:
        """The head's inputs ``[f; 1]`` (float64): the keys of an update of ``[W b]``."""
        return torch.cat([f, torch.ones(len(f), 1)], 1).double()

    @property
    def stats_keys(self) -> torch.Tensor:
        return self.keys(self.stats)

    @property
    def error_keys(self) -> torch.Tensor:
        return self.keys(self.errors if self.error_views is None else self.error_views)

    @property
    def anchor_keys(self) -> torch.Tensor:
        return self.keys(self.anchors)


@dataclass
class HeadUpdate:
    """A head editor's answer: the new head ``theta`` and the update ``delta`` (both
    classes × (features + 1), in the solver's precision) and what the solver records."""

    theta: torch.Tensor
    delta: torch.Tensor
    info: dict = field(default_factory=dict)


def head_parameters(model) -> torch.Tensor:
    """``Θ0 = [W b]`` (float64) of ``model.head``."""
    head = model.head
    return torch.cat([head.weight.detach(), head.bias.detach()[:, None]], 1).double().cpu()


def set_head(model, theta: torch.Tensor) -> None:
    """Write ``theta`` = ``[W b]`` (C, d+1) into ``model.head``."""
    with torch.no_grad():
        model.head.weight.copy_(theta[:, :-1].float())
        model.head.bias.copy_(theta[:, -1].float())


def head_probs(model, runner: Runner, pre_logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of ``model.head`` on pre-logit features: what :meth:`Runner.probs`
    gives on the images, bit for bit (the batches of the forward pass; tested)."""
    with torch.no_grad(), runner.autocast():
        return torch.softmax(head_logits(model, pre_logits, runner.batch_size), -1)


class HeadEditor(Editor):
    """The common ``edit()`` of the head editors; a subclass implements :meth:`solve`."""

    uses_anchors = False  # reads the correctly classified Edit-Discovery samples' features

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        raise NotImplementedError

    def error_key_features(self, edited, runner: Runner, data: EditData) -> torch.Tensor | None:
        """The features the solve reads as the errors' keys, where an editor does not read the
        errors' own (``None``: it does)."""
        return None

    def edit(self, model, runner: Runner, data: EditData) -> EditResult:
        edited = copy.deepcopy(model).to(runner.device).eval()
        info = {
            **self.start(data),
            "params_changed": int(edited.head.weight.numel() + edited.head.bias.numel()),
        }
        if len(data.labels) == 0:
            return unchanged(edited, info)
        t0 = time.perf_counter()
        feats = HeadFeatures(
            runner.pre_logits(edited, data.stats_images), runner.pre_logits(edited, data.images)
        )
        if self.uses_anchors:
            if data.anchor_images is None:
                raise EditError(
                    f"{self.name} preserves the correctly classified Edit-Discovery samples, but "
                    "the edit data has none: build it with vitedit.editors.edit_data(..., "
                    "anchor_positions=...)"
                )
            feats.anchors = runner.pre_logits(edited, data.anchor_images)
        feats.error_views = self.error_key_features(edited, runner, data)
        stats_seconds = time.perf_counter() - t0
        # the errors' predictions through the head alone: the body is unchanged, so its features
        # (cached across a grid) give what a full forward pass gives (a test checks it)
        p_before = head_probs(edited, runner, feats.errors)
        t1 = time.perf_counter()
        theta0 = head_parameters(edited)
        step = self.solve(theta0, feats, data)
        set_head(edited, step.theta)
        edit_seconds = time.perf_counter() - t1
        delta = step.delta.double()  # norms in float64, whatever the solver's precision
        update_norm = float(delta.norm())
        head_info = step.info.pop("layer_info", {})
        info.update(
            {
                "edit_seconds": edit_seconds,
                "stats_seconds": stats_seconds,
                **step.info,
                "update_norm_weight": float(delta[:, :-1].norm()),
                "update_norm_bias": float(delta[:, -1].norm()),
                # the same figures as the layer edits' (alerts: the update against the weights)
                "layer_info": {
                    "head": {
                        **head_info,
                        "update_norm": update_norm,
                        "weight_norm": float(theta0.norm()),
                    }
                },
            }
        )
        log = edit_log(p_before, head_probs(edited, runner, feats.errors), data)
        log["update_norm_head"] = update_norm
        log["edit_seconds"] = edit_seconds
        return EditResult(edited, log, info)
