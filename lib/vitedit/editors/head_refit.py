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
(deterministic).

``head_dfr`` (:class:`HeadDFREditor`) is the same refit at every Edit-Discovery sample's true label:
DFR-style last-layer retraining (from the original head, ridge toward it; not DFR's from-scratch
class-balanced fit) on all the labelled held-out data an editor may read. It ignores which errors
are edited; issue 30 asks whether it lifts Test accuracy."""

from __future__ import annotations

import numpy as np
import torch

from .base import EditData, EditError
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .solve import lbfgs


def refit_head(
    theta0: torch.Tensor, keys: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 500
) -> tuple[torch.Tensor, dict]:
    """``argmin_Θ mean CE(keys Θᵀ, y) + l2 ‖Θ − Θ0‖²`` from ``Θ0`` (float64 keys ``[f; 1]``):
    the refit of every editor here, and of ``benchmarks/bench_head_headroom.py``'s refits. Returns
    the head and the solver's record: its iterations and the largest entry of the objective's
    gradient at the answer (did it converge?)."""
    theta = theta0.clone().requires_grad_(True)

    def loss_fn():
        ce = torch.nn.functional.cross_entropy(keys @ theta.T, y)
        return ce + l2 * ((theta - theta0) ** 2).sum()

    state = lbfgs(loss_fn, theta, max_iter, 1e-9)
    with torch.enable_grad():
        grad = float(torch.autograd.grad(loss_fn(), theta)[0].abs().max())
    return theta.detach(), {"n_iter": int(state.get("n_iter", 0)), "final_grad_max": grad}


class HeadRefitEditor(HeadEditor):
    uses_anchors = True
    MAX_ITER = 500

    def __init__(self, *, refit_l2: float):
        self.refit_l2 = refit_l2

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        xe, xa = feats.error_keys, feats.anchor_keys
        x = torch.cat([xe, xa])
        y = torch.cat([data.targets, self.anchor_targets(xa, theta0, data)])
        theta, state = refit_head(theta0, x, y, self.refit_l2, self.MAX_ITER)
        with torch.no_grad():
            info = {
                "anchors": int(len(xa)),
                "anchors_changed": float(
                    ((xa @ theta.T).argmax(1) != (xa @ theta0.T).argmax(1)).double().mean()
                ),
                "errors_fixed_in_solve": float(
                    ((xe @ theta.T).argmax(1) == data.targets).double().mean()
                ),
                "solver_iterations": state["n_iter"],
                "solver_final_grad_max": state["final_grad_max"],
            }
        return HeadUpdate(theta, theta.float() - theta0.float(), info)

    def anchor_targets(
        self, xa: torch.Tensor, theta0: torch.Tensor, data: EditData
    ) -> torch.Tensor:
        """The anchors' targets: the model's own decisions (no label read)."""
        return (xa @ theta0.T).argmax(1)


class HeadDFREditor(HeadRefitEditor):
    """The refit at the anchors' true labels (``head_dfr``): every labelled Edit-Discovery sample."""

    def anchor_targets(
        self, xa: torch.Tensor, theta0: torch.Tensor, data: EditData
    ) -> torch.Tensor:
        if data.anchor_labels is None or len(data.anchor_labels) != len(xa):
            raise EditError(
                "head_dfr needs the true labels of the Edit-Discovery samples not edited "
                "(EditData.anchor_labels, one per anchor image): build the edit set with "
                "vitedit.editors.edit_data(..., anchor_positions=...)"
            )
        return torch.as_tensor(np.asarray(data.anchor_labels, dtype=np.int64))
