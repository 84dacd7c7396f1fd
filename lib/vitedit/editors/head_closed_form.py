"""The classifier head in closed form (registered as ``head_closed_form``): a ridge solution that
keeps the statistics samples' logits and moves each error's true-class logit ``head_margin`` above
the best other class, pulled toward the original head by ``ridge_lambda``."""

from __future__ import annotations

import torch

from .base import EditData
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .solve import margin_targets


class HeadClosedFormEditor(HeadEditor):
    def __init__(self, *, ridge_lambda: float, head_margin: float, head_error_weight: float):
        self.ridge_lambda, self.head_margin = ridge_lambda, head_margin
        self.head_error_weight = head_error_weight

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        """θ = argmin ||X θ − L||² + e·||X_e θ − T||² + λ||θ − θ0||² over θ = [W b]ᵀ: keep the
        statistics samples' logits L, move the errors to T (true-class logit = best other logit +
        margin)."""
        x, xe = feats.stats_keys, feats.error_keys
        t0 = theta0.T  # (d+1, C)
        logits_keep = x @ t0
        t = margin_targets(xe @ t0, data.targets, self.head_margin)
        a = (
            x.T @ x
            + self.head_error_weight * xe.T @ xe
            + self.ridge_lambda * torch.eye(x.shape[1], dtype=torch.float64)
        )
        rhs = x.T @ logits_keep + self.head_error_weight * xe.T @ t + self.ridge_lambda * t0
        theta = torch.linalg.solve(a, rhs).T  # (C, d+1)
        return HeadUpdate(theta, theta.float() - theta0.float())
