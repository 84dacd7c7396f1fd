"""The classifier head refit on Edit-Discovery (registered as ``head_refit``; issue 30, a pilot):
last-layer retraining on held-out data, as deep feature reweighting (DFR, Kirichenko et al., 2023)
retrains a last layer on data the body was not fitted on, here from the original head.

Minimises, over ``Θ = [W b]``, the mean cross-entropy over the edited errors (at their true labels)
and the Edit-Discovery samples not edited (the anchors, at the model's own decisions: no label
beyond the edited errors' is read, so the errors among them are fitted at their wrong class),
plus ``refit_l2 · ‖Θ − Θ0‖²``. Unlike the margin editors it does not ask for the errors at any
cost: each counts as one held-out sample, so it moves the boundary only where the held-out data as
a whole asks for it. Its figures on the Edit-Discovery samples not edited are not out of sample
(it fitted them) and understate a fix; Test judges it. L-BFGS in float64 on the CPU
(deterministic)."""

from __future__ import annotations

import torch

from .base import EditData
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .solve import lbfgs


class HeadRefitEditor(HeadEditor):
    uses_anchors = True
    MAX_ITER = 500

    def __init__(self, *, refit_l2: float):
        self.refit_l2 = refit_l2

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        xe, xa = feats.error_keys, feats.anchor_keys
        x = torch.cat([xe, xa])
        y = torch.cat([data.targets, (xa @ theta0.T).argmax(1)])  # anchors: as the model decides
        theta = theta0.clone().requires_grad_(True)

        def loss_fn():
            ce = torch.nn.functional.cross_entropy(x @ theta.T, y)
            return ce + self.refit_l2 * ((theta - theta0) ** 2).sum()

        state = lbfgs(loss_fn, theta, self.MAX_ITER, 1e-9)
        theta = theta.detach()
        with torch.no_grad():
            info = {
                "anchors": int(len(xa)),
                "anchors_changed": float(
                    ((xa @ theta.T).argmax(1) != y[len(xe) :]).double().mean()
                ),
                "errors_fixed_in_solve": float(
                    ((xe @ theta.T).argmax(1) == data.targets).double().mean()
                ),
                "solver_iterations": int(state.get("n_iter", 0)),
            }
        return HeadUpdate(theta, theta.float() - theta0.float(), info)
