"""The classifier head by gradient with an EWC penalty (registered as ``head``).

Adam on the errors' cross-entropy plus ½λ Σ Fᵢ (θᵢ − θᵢ*)², whose diagonal Fisher is the
expectation, under the model's own predictive distribution, of squared per-sample gradients of the
log-likelihood over the statistics samples. Solved in float32 on W and b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import EditData
from .head import HeadEditor, HeadFeatures, HeadUpdate


def fisher_diagonal(
    weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal Fisher of a linear softmax head ``(weight, bias)`` under its own predictive
    distribution.

    F = E_x E_{y~p(.|x)} [(∂ log p(y|x) / ∂θ)²], from per-sample gradients (not squared batch
    means). For logits W f + b: ∂/∂W_cj = (1[y=c] − p_c) f_j, so E_y[·²] = p_c (1 − p_c) f_j²
    (bias: p_c (1 − p_c)).
    """
    with torch.no_grad():
        p = torch.softmax(F.linear(feats.to(weight.dtype), weight, bias), -1).double()
        v = p * (1 - p)  # (N, C)
        f2 = feats.double() ** 2  # (N, d)
        fw = (v.T @ f2) / len(feats)  # (C, d)
        fb = v.mean(0)
    return fw.float(), fb.float()


class HeadGradientEditor(HeadEditor):
    def __init__(self, *, head_lr: float, head_steps: int, ewc_lambda: float):
        self.head_lr, self.head_steps, self.ewc_lambda = head_lr, head_steps, ewc_lambda

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        w0 = theta0[:, :-1].float().contiguous()
        b0 = theta0[:, -1].float().contiguous()
        fw, fb = fisher_diagonal(w0, b0, feats.stats)
        y = data.targets
        w = w0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w, b], lr=self.head_lr)
        with torch.enable_grad():
            for _ in range(self.head_steps):
                loss = F.cross_entropy(feats.errors @ w.T + b, y)
                ewc = (fw * (w - w0) ** 2).sum() + (fb * (b - b0) ** 2).sum()
                loss = loss + 0.5 * self.ewc_lambda * ewc
                opt.zero_grad()
                loss.backward()
                opt.step()
        w, b = w.detach(), b.detach()
        return HeadUpdate(
            torch.cat([w, b[:, None]], 1),
            torch.cat([w - w0, (b - b0)[:, None]], 1),
            {"fisher_mean": float(torch.cat([fw.ravel(), fb]).mean())},
        )
