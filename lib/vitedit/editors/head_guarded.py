"""The classifier head, edited under guard of the preserved decisions (registered as
``head_guarded``; a linear-SVM-style edit)."""

from __future__ import annotations

import torch

from .base import EditData, EditError
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .solve import lbfgs


class HeadGuardedEditor(HeadEditor):
    """Minimises, over ``Θ = [W b]`` from the original head ``Θ0``, with ``z = Θ [f; 1]``:

    ``Σ_errors Σ_c≠y relu(head_margin − (z_y − z_c))²``
    ``+ head_keep_weight · Σ_stats Σ_c≠ŷ relu(t_c − (z_ŷ − z_c))²``
    ``+ head_keep_pull · n_errors · mean_stats ‖Δz‖²  +  ρ ‖Θ − Θ0‖²``

    where ŷ is a statistics sample's predicted class before the edit and
    ``t_c = min(head_keep_margin, z0_ŷ − z0_c)``: every statistics sample is asked to keep its
    decision with a margin (or the margin it had, if smaller). No labels of FT-Train are read, and
    the held-out FT-Train the evaluation reports is never seen. Unlike a ridge pull toward the old
    logits (``head_closed_form``) or a projection out of the preserved keys' span
    (``head_nullspace``), a sample far from the decision boundary costs nothing: only the decisions
    an edit would actually flip constrain it, so an error whose fix does not cross a preserved
    sample's boundary can be fixed in full. Errors that sit among preserved samples of the class
    they are wrongly given stay unfixed (``head_keep_weight`` sets how much a preserved margin is
    worth against an error's). The guard sees only the statistics samples, and on its own it
    overfits them (it can keep every statistics decision while held-out samples flip: the pilot
    behind ``head_keep_pull``'s default, see ``params/base.yaml``). ``head_keep_pull`` adds the
    ridge term of ``head_closed_form`` (the mean squared change of the statistics samples' logits,
    per error): a small change everywhere in the data's directions, which is what carries over to
    samples the guard never saw. ``ρ = 1e-4 · tr(C0)/(d+1)`` only makes the solution unique. Its
    ablation ``head_guarded_weight_ridge`` replaces the pull by a weight-space ridge of the same
    scale (``head_weight_ridge``): whether the pull's preference for the data's directions is what
    carries over.
    Squared hinges (smooth), solved by L-BFGS in float64 on the CPU: deterministic, milliseconds.
    """

    RHO = 1e-4
    MAX_ITER = 500  # L-BFGS iterations (a solve to convergence, not a strength)

    def __init__(
        self,
        *,
        head_margin: float,
        head_keep_margin: float,
        head_keep_weight: float,
        head_keep_pull: float,
        head_weight_ridge: float,
    ):
        self.head_margin, self.head_keep_margin = head_margin, head_keep_margin
        self.head_keep_weight, self.head_keep_pull = head_keep_weight, head_keep_pull
        # the ablation head_guarded_weight_ridge: ``head_weight_ridge · n_errors · tr(C0)/(d+1) ·
        # ‖Θ − Θ0‖²`` in place of the pull, i.e. the pull with C0 replaced by its isotropic
        # average (the same scale, no preference for the data's directions)
        self.head_weight_ridge = head_weight_ridge

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        theta, info = self.optimise(theta0, feats.stats_keys, feats.error_keys, data.targets)
        if len(data.targets) and info["errors_fixed_in_solve"] == 0.0:
            # every error sits among guarded samples of the class it is given: the solve's
            # compromise fixes none of them and drifts along directions nothing penalises (on the
            # tiny model 8-155x the head's norm); writing it would rewrite the head for nothing
            info["refused_update_norm"] = float((theta - theta0).double().norm())
            info["message"] = (
                f"head_guarded: no edited error can be fixed without flipping the decisions it "
                f"guards (head_keep_weight={self.head_keep_weight:g}, head_margin="
                f"{self.head_margin:g}; the solve's compromise, {info['refused_update_norm']:.3g} "
                "in norm, fixes none): the head is left unchanged. A lower head_keep_weight or "
                "head_margin trades guarded decisions for fixes"
            )
            return HeadUpdate(theta0.clone(), torch.zeros_like(theta0), info)
        return HeadUpdate(theta, theta - theta0, info)

    def optimise(self, theta0: torch.Tensor, x: torch.Tensor, xe: torch.Tensor, y: torch.Tensor):
        """(Θ, figures): the guarded edit of head ``theta0`` (C, d+1) for the keys ``xe`` (errors,
        true classes ``y``), the statistics keys ``x`` guarding their current decisions."""
        if len(x) == 0:
            raise EditError(
                "head_guarded needs statistics samples (projection_samples >= 1 of FT-Train)"
            )
        z0 = x @ theta0.T
        pred = z0.argmax(1)
        rows = torch.arange(len(x))
        keep_t = torch.clamp(z0[rows, pred][:, None] - z0, max=self.head_keep_margin)  # (N, C)
        keep_mask = torch.ones_like(z0, dtype=torch.bool)
        keep_mask[rows, pred] = False
        err_mask = torch.ones(len(xe), z0.shape[1], dtype=torch.bool)
        err_mask[torch.arange(len(xe)), y] = False
        iso = float((x**2).sum() / len(x)) / x.shape[1]  # tr(C0) / (d + 1)
        rho = self.RHO * iso + self.head_weight_ridge * len(xe) * iso
        theta = theta0.clone().requires_grad_(True)

        def loss_fn():
            ze, z = xe @ theta.T, x @ theta.T
            ge = torch.relu(self.head_margin - (ze.gather(1, y[:, None]) - ze))[err_mask]
            gk = torch.relu(keep_t - (z.gather(1, pred[:, None]) - z))[keep_mask]
            pull = ((z - z0) ** 2).sum() / len(x) * len(xe)
            return (
                (ge**2).sum()
                + self.head_keep_weight * (gk**2).sum()
                + self.head_keep_pull * pull
                + rho * ((theta - theta0) ** 2).sum()
            )

        state = lbfgs(loss_fn, theta, self.MAX_ITER, 1e-10)
        with torch.enable_grad():
            grad_norm = float(torch.autograd.grad(loss_fn(), theta)[0].norm())
        theta = theta.detach()
        with torch.no_grad():
            changed = float(((x @ theta.T).argmax(1) != pred).double().mean())
            fixed = float(((xe @ theta.T).argmax(1) == y).double().mean())
        iters = int(state.get("n_iter", 0))
        return theta, {
            "stats_changed": changed,  # share of statistics samples whose decision moved
            "errors_fixed_in_solve": fixed,
            "final_loss": float(loss_fn()),
            "solver_iterations": iters,
            "solver_evaluations": int(state.get("func_evals", 0)),
            "solver_grad_norm": grad_norm,
            # stopped by its tolerances, not by the iteration / evaluation caps
            "solver_converged": bool(
                iters < self.MAX_ITER and state.get("func_evals", 0) < self.MAX_ITER * 5 // 4
            ),
        }
