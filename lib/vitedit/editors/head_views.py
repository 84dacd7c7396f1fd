"""The closed-form head edit with augmentation-averaged keys (registered as
``head_closed_form_views``; issue 30): each error's key is the mean of the head's inputs over views
of its image, the image analogue of ROME's keys averaged over prefixes. Its target follows from that
key, so the margin is asked of the views' mean (for a linear head, their mean logits), not of each
view nor of the image itself. The views are deterministic cousins of the training's augmentations
(:func:`vitedit.train.augment`): the image, its four reflected shifts by the training's step and,
where the dataset allows flips (``augment_flips``), its two flips and three quarter turns (six of
the training's eight flip-and-turn combinations: the two transposes are left out); they do not
follow ``augment``. Everything else is ``head_closed_form``'s, on the same grid, so comparing the
two shows what the averaging does. The edit is judged on the errors' own images; the views'
forward passes are timed with the features' reading (``stats_seconds``), not in ``edit_seconds``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..models import Runner
from ..train import shift_step
from .base import EditData
from .head import HeadFeatures, HeadUpdate
from .head_closed_form import HeadClosedFormEditor


def image_views(images: np.ndarray, flips: bool) -> list[np.ndarray]:
    """Views of ``images`` (N, H, W[, C]): the images, their four reflected shifts by the
    training's step (:func:`vitedit.train.shift_step`), and with ``flips`` the two flips and, for
    square images, the three quarter turns."""
    x = np.asarray(images)
    h, w = x.shape[1:3]
    pad = shift_step(h)
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 3), mode="reflect")
    out = [x] + [
        padded[:, dy : dy + h, dx : dx + w]
        for dy, dx in ((0, pad), (2 * pad, pad), (pad, 0), (pad, 2 * pad))
    ]
    if flips:
        out += [x[:, :, ::-1], x[:, ::-1]]
        out += [np.rot90(x, k, axes=(1, 2)) for k in (1, 2, 3)] if h == w else []
    return [np.ascontiguousarray(v) for v in out]


class HeadClosedFormViewsEditor(HeadClosedFormEditor):
    def __init__(
        self,
        *,
        ridge_lambda: float,
        head_margin: float,
        head_error_weight: float,
        params: Mapping[str, Any],
    ):
        super().__init__(
            ridge_lambda=ridge_lambda, head_margin=head_margin, head_error_weight=head_error_weight
        )
        # orientation-dependent classes (OrganAMNIST's left and right organs) forbid flips
        self.flips = bool(params["augment_flips"])

    def view_features(self, edited, runner: Runner, data: EditData) -> list[torch.Tensor]:
        """The head's inputs of every view of the errors, a tensor per view."""
        return [runner.pre_logits(edited, v) for v in image_views(data.images, self.flips)]

    def error_key_features(self, edited, runner: Runner, data: EditData) -> torch.Tensor:
        return torch.stack(self.view_features(edited, runner, data)).mean(0)


class HeadClosedFormEachViewEditor(HeadClosedFormViewsEditor):
    """``head_closed_form_each_view``: every view of an error is a key of its own with the error's
    label, so the margin is asked of each view (a data augmentation of the edit set); the views of
    one error share its weight (``head_error_weight`` / views), so the errors weigh what they weigh
    in ``head_closed_form``."""

    def error_key_features(self, edited, runner: Runner, data: EditData) -> torch.Tensor:
        return torch.cat(self.view_features(edited, runner, data))  # view-major

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        n_views = len(feats.error_views) // len(data.labels)
        per_view = HeadClosedFormEditor(
            ridge_lambda=self.ridge_lambda,
            head_margin=self.head_margin,
            head_error_weight=self.head_error_weight / n_views,
        )
        step = per_view.solve(theta0, feats, replace(data, labels=np.tile(data.labels, n_views)))
        step.info["key_views"] = n_views
        return step
