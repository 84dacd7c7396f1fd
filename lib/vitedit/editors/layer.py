"""The shared machinery of the editors that rewrite a transformer block's projection (AlphaEdit,
its P = I ablation, MEMIT): targets at the CLS token, keys, the batch loop that spreads the
residual over the edited layers, and the preservation measure. A subclass supplies the solve's
terms (:meth:`LayerEditor.solve_terms`) and says whether earlier batches' keys stay protected.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import Runner
from ..predcache import images_key
from .base import EditData, EditError, Editor, EditResult, edit_log, unchanged
from .preservation import preservation_error, preservation_keys, preservation_summary
from .solve import alphaedit_update
from .statistics import StatsCache, Target, cached_second_moment, module_of

V_WEIGHT_DECAY_RULES = ("relative", "absolute")
# preservation keys kept per target set and image set up to this size (500 images x 50 tokens x 192
# inputs of the default model: 19 MB; 'all' of a large FT-Train is recomputed rather than kept)
KEYS_MAX_BYTES = 64 * 2**20


class LayerEditor(Editor):
    """An update of ``blocks[l].mlp.fc2`` (optionally ``blocks[l].attn.proj``) of the traced layers.

    Targets: the CLS hidden state after the last edited layer, moved by δ so that the model
    predicts the true label (ROME/MEMIT's ``compute_v``: weight decay ``v_weight_decay``·‖δ‖/‖h‖²,
    ‖δ‖ ≤ ``clamp_norm_factor``·‖h‖); the residual is spread over the edited layers as MEMIT does.
    Every edit records its preservation error ‖ΔW k‖ / ‖W k‖ per layer on the statistics keys
    (in-sample) and on held-out FT-Train keys.
    """

    def __init__(
        self,
        *,
        layers: Sequence[int],
        edit_modules: Sequence[str],
        stats_scope: str,
        v_lr: float,
        v_num_grad_steps: int,
        v_weight_decay: float,
        v_weight_decay_rule: str,
        clamp_norm_factor: float,
        edit_batch_size: int | None,
        stats_cache: StatsCache | None,
        progress: bool,
    ):
        if v_weight_decay_rule not in V_WEIGHT_DECAY_RULES:
            raise EditError(
                f"v_weight_decay_rule '{v_weight_decay_rule}' unknown; choose relative or absolute"
            )
        self.layers = sorted(set(int(layer) for layer in layers))
        self.edit_modules = list(edit_modules)
        self.stats_scope = stats_scope
        self.v_lr, self.v_num_grad_steps = v_lr, v_num_grad_steps
        self.v_weight_decay, self.v_weight_decay_rule = v_weight_decay, v_weight_decay_rule
        self.clamp_norm_factor = clamp_norm_factor
        self.edit_batch_size = edit_batch_size
        self.stats_cache, self.progress = stats_cache, progress

    # -- what a subclass says
    projects = False  # a null-space edit: its preservation is promised, its reach is recorded
    accumulates = False  # earlier batches' keys enter later solves (AlphaEdit's Kp Kpᵀ)
    regulariser = "L2"  # the setting that regularises its solve (named when the solve fails)

    def solve_terms(self, moment: torch.Tensor) -> tuple[torch.Tensor, float, Any, dict]:
        """(P, the ridge term, the preserved-key term, what to record) of one target's solve."""
        raise NotImplementedError

    def message(self, layer_info: dict) -> str | None:
        """A note in words about the edit's layers (e.g. an empty null space), or None."""
        return None

    # -- statistics
    def targets(self) -> list[Target]:
        return [(li, m) for li in self.layers for m in self.edit_modules]

    def statistics(self, model, runner: Runner, data: EditData) -> tuple[dict, dict]:
        """The solve's terms per (layer, module) and what was recorded about each."""
        cache = None
        if self.stats_cache is not None:
            key = {**self.stats_cache.key, "positions": data.stats_positions.tolist()}
            cache = StatsCache(self.stats_cache.folder, key)
        terms, info = {}, {}
        for target in self.targets():
            t0 = time.perf_counter()
            moment, cached = cached_second_moment(
                model, runner, data.stats_images, target, self.stats_scope, cache, self.progress
            )
            p, l2, preserved, tinfo = self.solve_terms(moment)
            terms[target] = (p, l2, preserved)
            info[f"L{target[0]}.{target[1]}"] = {
                **tinfo,
                "cached": cached,
                "seconds": time.perf_counter() - t0,
            }
        return terms, info

    # -- targets
    def cls_states(self, model, runner: Runner, x: torch.Tensor, layer: int) -> torch.Tensor:
        """CLS hidden state at the output of block ``layer`` (n, D), float32."""
        grab = {}
        h = model.blocks[layer].register_forward_hook(
            lambda m, i, o: grab.__setitem__("h", o[:, 0])
        )
        try:
            with torch.no_grad(), runner.autocast():
                model(x)
        finally:
            h.remove()
        return grab["h"].detach().float()

    def target_states(
        self, model, runner: Runner, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z = h + δ at the CLS token after the last edited layer, δ optimised so the model predicts
        y (ROME/MEMIT's compute_v: weight decay wd·‖δ‖/‖h‖², ‖δ‖ clamped to factor·‖h‖)."""
        last = self.layers[-1]
        h0 = self.cls_states(model, runner, x, last)
        delta = torch.zeros_like(h0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.v_lr)
        h_norm = h0.norm(dim=1, keepdim=True)
        max_norm = self.clamp_norm_factor * h_norm

        def add_delta(m, i, o):
            o = o.clone()
            o[:, 0] = o[:, 0] + delta.to(o.dtype)
            return o

        hook = model.blocks[last].register_forward_hook(add_delta)
        try:
            for _ in range(self.v_num_grad_steps):
                with runner.autocast():
                    logits = model(x).float()
                if self.v_weight_decay_rule == "relative":  # ROME/MEMIT compute_v
                    decay = (delta.norm(dim=1) / h_norm[:, 0].clamp_min(1e-12) ** 2).mean()
                else:  # the original system's form
                    decay = (delta**2).sum(1).mean()
                loss = F.cross_entropy(logits, y) + self.v_weight_decay * decay
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():  # clamp ||δ|| relative to the original residual
                    n = delta.norm(dim=1, keepdim=True)
                    delta.mul_(
                        torch.where(n > max_norm, max_norm / n.clamp_min(1e-12), torch.ones_like(n))
                    )
        finally:
            hook.remove()
        return h0 + delta.detach(), h0

    def keys(self, model, runner: Runner, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Inputs of the edited projection at the CLS token (in, n)."""
        grab = {}
        h = module_of(model, *target).register_forward_pre_hook(
            lambda m, a: grab.__setitem__("k", a[0][:, 0])
        )
        try:
            with torch.no_grad(), runner.autocast():
                model(x)
        finally:
            h.remove()
        return grab["k"].detach().float().T

    # -- the edit
    def edit(self, model, runner: Runner, data: EditData) -> EditResult:
        device = runner.device
        edited = copy.deepcopy(model).to(device).eval()
        for p in edited.parameters():
            p.requires_grad_(False)
        n = len(data.labels)
        info = {**self.start(data), "layers": self.layers, "modules": self.edit_modules}
        if n == 0:
            return unchanged(edited, {**info, "layer_info": {}})
        p_before = runner.probs(edited, data.images)
        t0 = time.perf_counter()
        terms, layer_info = self.statistics(edited, runner, data)
        stats_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        batch_of = np.arange(n) // (self.edit_batch_size or n)
        deltas, reach = self._solve_batches(edited, runner, data, terms, batch_of)
        edit_seconds = time.perf_counter() - t1
        t2 = time.perf_counter()
        pres = {
            where: preservation_error(
                model,
                runner,
                deltas,
                imgs,
                self.stats_scope,
                self._keys(model, runner, deltas, imgs),
            )
            for where, imgs in (("insample", data.stats_images), ("heldout", data.heldout_images))
            if imgs is not None and len(imgs)
        }
        for (layer, module), dw in deltas.items():
            key = f"L{layer}.{module}"
            li = layer_info[key]
            li["update_norm"] = float(dw.norm())
            li["weight_norm"] = float(module_of(model, layer, module).weight.detach().norm())
            if self.projects and reach[(layer, module)]:
                # mean share of an edited error's key energy in P's range (1 - it: in the
                # preserved subspace, where the edit cannot act without moving preserved outputs)
                li["error_key_energy_outside"] = float(torch.cat(reach[(layer, module)]).mean())
            for where, per in pres.items():
                for stat, v in per[key].items():
                    li[f"preservation_{where}_{stat}"] = v
        info["preservation_seconds"] = time.perf_counter() - t2
        info["preservation"] = preservation_summary(layer_info, guaranteed=self.projects)
        note = self.message(layer_info)
        if note:
            info["message"] = note
        log = edit_log(p_before, runner.probs(edited, data.images), data, batch_of)
        for key, li in layer_info.items():
            log[f"update_norm_{key}"] = li["update_norm"]
        log["edit_seconds"] = edit_seconds
        info.update(
            {
                "edit_seconds": edit_seconds,
                "stats_seconds": stats_seconds,
                "layer_info": layer_info,
                "n_batches": int(batch_of.max()) + 1,
            }
        )
        return EditResult(edited, log, info)

    def _keys(self, model, runner: Runner, deltas: dict, images: np.ndarray) -> list | None:
        """The preservation keys of ``images`` at the edited projections, kept in the statistics
        cache (they depend on the base model and the images only, not on the edit's settings)."""
        if self.stats_cache is None:
            return None
        key = ("preservation_keys", tuple(sorted(deltas)), images_key(images))
        keys = self.stats_cache.targets.get(key)
        if keys is None:
            keys = preservation_keys(model, runner, sorted(deltas), images)
            if (
                sum(v.numel() * v.element_size() for b in keys for v in b.values())
                <= KEYS_MAX_BYTES
            ):
                self.stats_cache.targets[key] = keys  # larger ones are computed again: memory
        return keys

    def _targets(self, edited, runner: Runner, x, y, images: np.ndarray, first: bool):
        """The target states of a batch (:meth:`target_states`). The first batch starts from the
        base model, so its targets depend only on the errors, the last edited layer and the
        ``v_*`` settings: they are kept in the statistics cache and a grid over the other settings
        (L2, thresholds, ...) computes them once."""

        def compute():
            knobs = (
                f"v_lr={self.v_lr}, v_weight_decay={self.v_weight_decay}, "
                f"clamp_norm_factor={self.clamp_norm_factor}"
            )
            try:
                with torch.enable_grad():
                    z = self.target_states(edited, runner, x, y)[0]
            except (
                RuntimeError
            ) as e:  # e.g. v_lr beyond float32: "cannot be converted ... overflow"
                raise EditError(
                    f"{self.name}: the target optimisation failed ({e}); lower {knobs}"
                ) from None
            if not torch.isfinite(z).all():
                raise EditError(f"{self.name}: the target optimisation diverged; lower {knobs}")
            return z

        if not first or self.stats_cache is None:
            return compute()
        key = (
            self.layers[-1],
            self.v_lr,
            self.v_num_grad_steps,
            self.v_weight_decay,
            self.v_weight_decay_rule,
            self.clamp_norm_factor,
            images_key(images),
            tuple(y.tolist()),
        )
        return self.stats_cache.target(key, compute)

    def _solve_batches(self, edited, runner: Runner, data: EditData, terms: dict, batch_of):
        """Edit ``edited`` in place batch by batch; the summed update per target, and per target the
        share of each error's key energy in P's range."""
        targets = self.targets()
        prev_cov: dict[Target, torch.Tensor | None] = {t: None for t in targets}
        deltas = {
            t: torch.zeros_like(module_of(edited, *t).weight, dtype=torch.float64, device="cpu")
            for t in targets
        }
        reach: dict[Target, list[torch.Tensor]] = {t: [] for t in targets}
        for b in range(int(batch_of.max()) + 1):
            sel = np.flatnonzero(batch_of == b)
            x = runner.inputs(data.images[sel])
            y = torch.as_tensor(
                np.asarray(data.labels)[sel], dtype=torch.long, device=runner.device
            )
            z = self._targets(edited, runner, x, y, data.images[sel], first=b == 0)
            for i, target in enumerate(targets):
                h_cur = self.cls_states(edited, runner, x, self.layers[-1])
                resid = ((z - h_cur) / (len(targets) - i)).T  # (D, n): MEMIT's spreading
                k = self.keys(edited, runner, x, target)
                lin = module_of(edited, *target)
                p, l2, preserved = terms[target]
                kd = k.double().cpu()  # the errors' keys: how much of them the null space can reach
                reach[target].append((p.double() @ kd).norm(dim=0) ** 2 / kd.norm(dim=0) ** 2)
                try:
                    dw = alphaedit_update(resid.cpu(), k.cpu(), p, prev_cov[target], l2, preserved)
                except EditError as e:  # name this method's own knob
                    knob = self.regulariser
                    raise EditError(
                        f"{self.name}: {e} ({knob}, now {getattr(self, knob)})"
                    ) from None
                with torch.no_grad():
                    lin.weight += dw.to(lin.weight.dtype).to(runner.device)
                deltas[target] += dw
                if self.accumulates:
                    kc = k.double().cpu()
                    prev = prev_cov[target]
                    prev_cov[target] = (prev if prev is not None else 0) + kc @ kc.T
        return deltas, reach
