"""The classifier head in closed form, anchored on held-out data (registered as ``head_anchored``,
issue 30): :mod:`~vitedit.editors.head_closed_form`'s ridge solution that also keeps the logits of
the Edit-Discovery samples not edited (the anchors), weighted ``anchor_weight`` each.

Those samples were never trained on, so they sit near the decision boundary as Test's do, unlike
the FT-Train statistics samples every editor keeps (the model was fitted on them). No label of
theirs is read: the errors among them are kept at their wrong logits too, so its figures on the
Edit-Discovery samples not edited (fix rate, cross-fit, regression) are not out of sample and
understate a fix; Test judges it. At ``anchor_weight`` 0 it is ``head_closed_form`` exactly (a
test checks it)."""

from __future__ import annotations

import torch

from .base import EditData
from .head import HeadFeatures, HeadUpdate
from .head_closed_form import HeadClosedFormEditor
from .solve import margin_targets


class HeadAnchoredEditor(HeadClosedFormEditor):
    uses_anchors = True

    def __init__(self, *, anchor_weight: float, **kw):
        super().__init__(**kw)
        self.anchor_weight = anchor_weight

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        """θ = argmin ||X θ − L||² + a·||X_a θ − L_a||² + e·||X_e θ − T||² + λ||θ − θ0||²: the
        closed form with the anchors' logits ``L_a`` kept too."""
        x, xe, xa = feats.stats_keys, feats.error_keys, feats.anchor_keys
        t0 = theta0.T  # (d+1, C)
        t = margin_targets(xe @ t0, data.targets, self.head_margin)
        e, a = self.head_error_weight, self.anchor_weight
        lhs = (
            x.T @ x
            + a * xa.T @ xa
            + e * xe.T @ xe
            + self.ridge_lambda * torch.eye(x.shape[1], dtype=torch.float64)
        )
        rhs = x.T @ (x @ t0) + a * xa.T @ (xa @ t0) + e * xe.T @ t + self.ridge_lambda * t0
        theta = torch.linalg.solve(lhs, rhs).T  # (C, d+1)
        return HeadUpdate(theta, theta.float() - theta0.float(), {"anchors": int(len(xa))})
