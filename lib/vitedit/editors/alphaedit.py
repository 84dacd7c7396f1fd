"""AlphaEdit (Fang et al., ICLR 2025) for ViT classifiers, and its P = I ablation.

ΔW = R Kᵀ P (K Kᵀ P + Kp Kpᵀ P + λ·I)⁻¹, with P = U Uᵀ over the eigenvectors of the preserved
keys' second moment C0 whose eigenvalues lie below ``nullspace_threshold`` (× λ_max with
``nullspace_rule: relative``); λ = ``L2`` × tr(C0)/d with ``L2_rule: relative``. With
``null_space=False`` (registered as ``alphaedit_noproj``) the same solve runs with P = I and no C0
term: plain ridge least squares, the ablation that shows what the null space buys (it has no
threshold or rule: the registry passes None for both).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EditError
from .layer import LayerEditor
from .solve import L2_RULES, NULLSPACE_RULES, key_scale, null_space_projection


class AlphaEdit(LayerEditor):
    accumulates = True

    def __init__(
        self,
        *,
        null_space: bool,
        nullspace_threshold: float | None,
        nullspace_rule: str | None,
        L2: float,
        L2_rule: str,
        **shared: Any,
    ):
        if null_space and (nullspace_threshold is None or nullspace_rule not in NULLSPACE_RULES):
            raise EditError(
                f"AlphaEdit's null space needs a nullspace_threshold and a nullspace_rule from "
                f"{list(NULLSPACE_RULES)} (given {nullspace_threshold}, {nullspace_rule!r})"
            )
        if L2_rule not in L2_RULES:
            raise EditError(f"L2_rule '{L2_rule}' unknown; choose from {list(L2_RULES)}")
        if not L2 > 0:
            raise EditError(
                f"L2 = {L2} makes the AlphaEdit solve singular (the edit keys span at most "
                f"max_edits directions); set L2 > 0 (relative to tr(C0)/d with L2_rule relative)"
            )
        super().__init__(**shared)  # layers, the target and the statistics: LayerEditor
        self.null_space = null_space
        self.nullspace_threshold, self.nullspace_rule = nullspace_threshold, nullspace_rule
        self.L2, self.L2_rule = L2, L2_rule

    @property
    def projects(self) -> bool:
        return self.null_space

    def solve_terms(self, moment: torch.Tensor):
        scale = key_scale(moment)
        l2 = self.L2 * scale if self.L2_rule == "relative" else self.L2
        if self.null_space:
            p, pinfo = null_space_projection(moment, self.nullspace_threshold, self.nullspace_rule)
        else:
            d = moment.shape[0]
            p = torch.eye(d, dtype=torch.float64)
            evals = torch.linalg.eigvalsh(moment.double()).clamp_min(0)
            pinfo = {"kept_dim": d, "dim": d, "eigenvalues": evals.numpy()}
        info = {k: v for k, v in pinfo.items() if k != "eigenvalues"}
        info["eigenvalues"] = pinfo["eigenvalues"].tolist()
        return p, l2, None, {**info, "key_scale": scale, "L2_effective": l2}

    def message(self, layer_info: dict) -> str | None:
        empty = [k for k, li in layer_info.items() if li.get("kept_dim") == 0]
        if not (self.null_space and empty):
            return None
        return (
            f"the null space is empty at {', '.join(empty)} (nullspace_threshold "
            f"{self.nullspace_threshold:g}, rule {self.nullspace_rule}): no update there"
        )
