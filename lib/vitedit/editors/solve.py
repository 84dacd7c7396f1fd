"""The closed-form pieces the editors share: the null-space projection, the key scale that makes
ridge terms relative, AlphaEdit's linear solve, margin targets for logits, and the L-BFGS
minimisation of the head editors' smooth losses."""

from __future__ import annotations

import torch

from .base import EditError

NULLSPACE_RULES = ("relative", "absolute", "energy")
L2_RULES = ("relative", "absolute")


def null_space_projection(
    moment: torch.Tensor, threshold: float, rule: str = "relative"
) -> tuple[torch.Tensor, dict]:
    """P = U Uᵀ over the eigenvectors of ``moment`` that span its (approximate) null space.

    ``rule``: ``relative`` keeps eigenvalues below ``threshold`` x λ_max (scale-free: the same
    threshold means the same thing at every layer and for every model), ``absolute`` those below
    ``threshold`` (the original system), ``energy`` the directions that together hold the bottom
    ``threshold`` share of the spectrum's energy.
    """
    if rule not in NULLSPACE_RULES:
        raise EditError(f"unknown null-space rule '{rule}'; choose from {list(NULLSPACE_RULES)}")
    evals, evecs = torch.linalg.eigh(moment.double())  # ascending
    evals = evals.clamp_min(0)
    if rule == "energy":
        cum = torch.cumsum(evals, 0) / evals.sum().clamp_min(1e-300)
        keep = cum <= threshold
        cut = float(evals[keep].max()) if keep.any() else 0.0
    else:
        cut = threshold * float(evals.max()) if rule == "relative" else threshold
        keep = evals < cut
    u = evecs[:, keep]
    return u @ u.T, {
        "kept_dim": int(keep.sum()),
        "dim": int(len(evals)),
        "eigenvalues": evals.numpy(),
        "eigenvalue_cut": cut,
        "lambda_max": float(evals.max()),
    }


def key_scale(moment: torch.Tensor) -> float:
    """tr(C0)/d: the mean eigenvalue of the preserved keys' second moment (what ``L2`` is relative
    to)."""
    return float(torch.trace(moment.double())) / moment.shape[0]


def alphaedit_update(
    resid: torch.Tensor,
    keys: torch.Tensor,
    projection: torch.Tensor,
    prev_cov: torch.Tensor | None = None,
    L2: float = 0.0,
    preserved: torch.Tensor | None = None,
) -> torch.Tensor:
    """ΔW = R Kᵀ P (K Kᵀ P + Kp Kpᵀ P + C P + L2·I)⁻¹ (AlphaEdit eq. 15), by a linear solve.

    ``resid`` R: (out, n), ``keys`` K: (in, n), ``projection`` P: (in, in), ``prev_cov`` Kp Kpᵀ,
    ``preserved`` C: a weighted second moment of preserved keys (MEMIT's λ·C0 with P = I, L2 = 0).
    Solved in the transposed form (P (K Kᵀ + Kp Kpᵀ + C) + L2·I) X = P K Rᵀ, ΔW = Xᵀ.
    A singular system (``L2 = 0`` without ``preserved``) is refused with the fix.
    """
    k = keys.double()
    p = projection.double()
    cov = k @ k.T
    if prev_cov is not None:
        cov = cov + prev_cov.double()
    if preserved is not None:
        cov = cov + preserved.double()
    if L2 <= 0 and preserved is None:
        raise EditError(
            f"L2 = {L2} makes the edit's solve singular (K Kᵀ P has rank <= {k.shape[1]} < "
            f"{k.shape[0]}); set L2 > 0 (e.g. the default, relative to the key statistics)"
        )
    a = p @ cov + L2 * torch.eye(k.shape[0], dtype=torch.float64)
    try:
        x = torch.linalg.solve(a, p @ k @ resid.double().T)
    except torch.linalg.LinAlgError as e:
        raise EditError(
            f"the edit's linear system is singular ({e}); increase its regulariser"
        ) from None
    if not torch.isfinite(x).all():
        raise EditError("the edit's solve returned non-finite values; increase its regulariser")
    return x.T


def margin_targets(logits: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """``logits`` with each row's true-class logit raised to ``margin`` above the best other class
    (never lowered); every other logit unchanged."""
    rows = torch.arange(len(y))
    other = logits.clone()
    other[rows, y] = -torch.inf
    target = logits.clone()
    target[rows, y] = torch.maximum(logits[rows, y], other.max(1).values + margin)
    return target


def lbfgs(loss_fn, theta: torch.Tensor, max_iter: int, tolerance_grad: float) -> dict:
    """Minimise ``loss_fn()`` over the leaf tensor ``theta`` (in place) by L-BFGS with a strong
    Wolfe line search, to convergence (deterministic in float64 on the CPU); returns the
    optimiser's state (``n_iter``, ``func_evals``)."""
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return opt.state[opt._params[0]]
