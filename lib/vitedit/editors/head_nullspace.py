"""AlphaEdit's null-space projection applied where the decision is made: the classifier head
(registered as ``head_nullspace``), optionally backed off to a prediction-change budget."""

from __future__ import annotations

import numpy as np
import torch

from .base import EditData, EditError
from .head import HeadEditor, HeadFeatures, HeadUpdate
from .solve import alphaedit_update, key_scale, margin_targets, null_space_projection

VERIFY_BACKOFF = ("scale", "sample")


class HeadNullspaceEditor(HeadEditor):
    """Keys are the head's inputs ``[f; 1]`` (pre-logit features and the bias input); the preserved
    keys are the statistics samples', ``C0 = Xᵀ X / n``; ``P`` projects onto the eigen-directions
    of ``C0`` below ``head_nullspace_threshold`` x λ_max. The values are target logits: the true
    class ``head_margin`` above the best other class, every other logit unchanged. Closed form, no
    target optimisation: ``ΔΘ = R Kᵀ P (K Kᵀ P + head_L2 · tr(C0)/d · I)⁻¹``
    (:func:`alphaedit_update`). A key's change of logits is ``ΔΘ k``; for a preserved key ``P``
    makes it ~0, so what the edit can reach is the part of the errors' keys outside the preserved
    subspace (``info["error_key_energy_outside"]``: the share of their energy in ``P``'s range).

    ``head_verify_budget`` > 0 adds an edit-and-verify loop: the edit is backed off until the share
    of the statistics samples whose predicted class it changes is at most the budget (no labels
    needed; the held-out FT-Train samples are never looked at). ``head_verify_backoff``:

    - ``scale``: the whole update is scaled back (bisection on its scale in [0, 1]): every error
      keeps a share of its fix;
    - ``sample``: errors are dropped one at a time, each time the one whose removal leaves the
      fewest changed statistics samples, and the edit is solved again on the rest, until the budget
      holds (then ``scale`` if it still does not): the errors that stay are fixed in full, the ones
      whose fix would move preserved decisions are given up (``info["dropped_errors"]``).
    """

    def __init__(
        self,
        *,
        head_nullspace_threshold: float,
        head_L2: float,
        head_margin: float,
        head_verify_budget: float,
        head_verify_backoff: str,
        head_verify_holdout: float,
    ):
        if head_verify_backoff not in VERIFY_BACKOFF:
            raise EditError(
                f"head_verify_backoff must be one of {VERIFY_BACKOFF}, not {head_verify_backoff!r}"
            )
        self.head_nullspace_threshold, self.head_L2 = head_nullspace_threshold, head_L2
        self.head_margin = head_margin
        self.head_verify_budget, self.head_verify_backoff = head_verify_budget, head_verify_backoff
        self.head_verify_holdout = head_verify_holdout

    def solve(self, theta0: torch.Tensor, feats: HeadFeatures, data: EditData) -> HeadUpdate:
        xe = feats.error_keys
        x, xv = self._split_statistics(feats.stats_keys)  # P's keys, and the verify loop's
        moment = x.T @ x / len(x)
        proj, pinfo = null_space_projection(moment, self.head_nullspace_threshold, "relative")
        y = data.targets
        n = len(y)
        logits = xe @ theta0.T
        target = margin_targets(logits, y, self.head_margin)

        def solve(rows: np.ndarray) -> torch.Tensor:  # (C, d+1): the edit of the errors ``rows``
            if not len(rows):
                return torch.zeros_like(theta0)
            r = torch.as_tensor(rows)
            try:
                return alphaedit_update(
                    (target[r] - logits[r]).T, xe[r].T, proj, L2=self.head_L2 * key_scale(moment)
                )
            except EditError as e:  # name this method's own knob
                raise EditError(f"{self.name}: {e} (head_L2, now {self.head_L2})") from None

        kept = np.arange(n)
        delta = solve(kept)
        scale = 1.0
        verify = self.head_verify_budget > 0
        if verify and self.head_verify_backoff == "sample":
            kept, delta, scale = self._backoff(theta0, xv, xe, y, kept, delta, solve)
        elif verify:
            scale = self._verify(theta0, delta, xv)

        def outside(keys):  # mean share of the keys' energy in P's range (what the edit can reach)
            return float(((proj @ keys.T).norm(dim=0) ** 2 / (keys.T.norm(dim=0) ** 2)).mean())

        step = scale * delta
        return HeadUpdate(
            theta0 + step,
            step,
            {
                "kept_dim": pinfo["kept_dim"],
                "dim": pinfo["dim"],
                "scale": scale,
                "verify_backoff": self.head_verify_backoff if verify else "off",
                "verify_samples": int(len(xv)) if verify else 0,
                "verify_in_sample": bool(verify and self.head_verify_holdout == 0),
                "dropped_errors": int(n - len(kept)),
                # Edit-Discovery positions of the errors the back-off gave up
                "dropped_positions": np.asarray(data.positions)[
                    np.setdiff1d(np.arange(n), kept)
                ].tolist(),
                "error_key_energy_outside": outside(xe),
                "preserved_key_energy_outside": outside(x),
                "layer_info": {"kept_dim": pinfo["kept_dim"], "dim": pinfo["dim"]},
            },
        )

    def _split_statistics(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the keys P is built from, the keys the verify loop checks). ``head_verify_holdout`` 0:
        the same samples (the check is in-sample: P was built to protect exactly them, so it
        underestimates what the edit moves elsewhere); > 0: that share of the statistics samples
        (a fixed permutation, at least one each side) is kept out of P and only verified on. Both
        are statistics samples, so the held-out FT-Train the evaluation reports never takes part."""
        n = len(keys)
        if self.head_verify_budget <= 0 or self.head_verify_holdout <= 0 or n < 2:
            return keys, keys
        perm = torch.as_tensor(np.random.default_rng(0).permutation(n))
        n_verify = min(max(int(round(self.head_verify_holdout * n)), 1), n - 1)
        return keys[perm[n_verify:]], keys[perm[:n_verify]]

    @staticmethod
    def _changed(theta0, delta, x, scale: float = 1.0) -> float:
        """The share of the statistics samples whose predicted class ``scale * delta`` changes."""
        before = (x @ theta0.T).argmax(1)
        return float(((x @ (theta0 + scale * delta).T).argmax(1) != before).double().mean())

    def _backoff(self, theta0, x, xe, y, kept, delta, solve):
        """Per-sample back-off. A greedy path from every error down to none: each step drops the
        error whose removal leaves the fewest statistics samples changed (ties: the smallest change
        of their logits, ``‖ΔΘ Xᵀ‖``), until the budget holds at full scale. Every set on the path
        is then scaled back to the budget (``_verify``) and the one that fixes the most edited
        errors is kept (ties: the fewer dropped), so it never fixes fewer than ``scale`` alone (the
        path's first set). A solve per candidate: O(n²) small solves for n errors."""
        path = [(kept, delta)]
        while len(kept) and self._changed(theta0, delta, x) > self.head_verify_budget:
            best = None
            for i in range(len(kept)):
                d = solve(np.delete(kept, i))
                crit = (self._changed(theta0, d, x), float((d @ x.T).norm()), i)
                if best is None or crit < best[0]:
                    best = (crit, d)
            kept, delta = np.delete(kept, best[0][2]), best[1]
            path.append((kept, delta))
        choice = None
        for kept, delta in path:
            scale = self._verify(theta0, delta, x)
            fixed = int(((xe @ (theta0 + scale * delta).T).argmax(1) == y).sum())
            if choice is None or fixed > choice[0]:
                choice = (fixed, kept, delta, scale)
        return choice[1], choice[2], choice[3]

    def _verify(self, theta0, delta, x, steps: int = 20) -> float:
        """The largest scale in [0, 1] (bisection) at which at most ``head_verify_budget`` of the
        statistics samples change their predicted class."""
        if self._changed(theta0, delta, x) <= self.head_verify_budget:
            return 1.0
        lo, hi = 0.0, 1.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi)
                if self._changed(theta0, delta, x, mid) <= self.head_verify_budget
                else (lo, mid)
            )
        return lo
