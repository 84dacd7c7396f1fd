"""MEMIT (Meng et al., ICLR 2023) for ViT classifiers: covariance-weighted least squares.

ΔW = R Kᵀ (K Kᵀ + λ·C0)⁻¹ with C0 = E[k kᵀ] of the preserved keys (the same statistics AlphaEdit's
projection is built from; a mean, as upstream's ``cov``) and λ = ``mom2_update_weight``; no
projection, no ridge term, no carry-over of earlier batches' keys. With ``stats_scope: cls+all``
C0 is the sum of two means (CLS and all tokens), so its trace is about twice a single scope's:
compare λ across scopes with that in mind.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EditError
from .layer import LayerEditor
from .solve import key_scale


class MEMIT(LayerEditor):
    regulariser = "mom2_update_weight"  # MEMIT's λ on the preserved keys' second moment (no L2)

    def __init__(
        self,
        *,
        mom2_update_weight: float,
        **shared: Any,
    ):
        if not mom2_update_weight > 0:
            raise EditError(
                f"mom2_update_weight = {mom2_update_weight} leaves MEMIT's solve singular; set it > 0"
            )
        super().__init__(**shared)  # layers, the target and the statistics: LayerEditor
        self.mom2_update_weight = mom2_update_weight

    def solve_terms(self, moment: torch.Tensor):
        d = moment.shape[0]
        info = {"kept_dim": d, "dim": d, "key_scale": key_scale(moment), "L2_effective": 0.0}
        info["eigenvalues"] = torch.linalg.eigvalsh(moment.double()).clamp_min(0).tolist()
        info["mom2_update_weight"] = self.mom2_update_weight
        return (
            torch.eye(d, dtype=torch.float64),
            0.0,
            self.mom2_update_weight * moment.double(),
            info,
        )
