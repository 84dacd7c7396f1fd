"""Pictures of a traced error: ASTRA's patch attribution (which patches support the prediction)
and the image a noisy copy amounts to."""

from __future__ import annotations

import numpy as np
import torch

from ..models import Runner
from .restorations import LocateError


@torch.inference_mode()
def corrupted_view(model, runner: Runner, image: np.ndarray, noise: torch.Tensor) -> np.ndarray:
    """The image a noisy copy amounts to, for display: the least-squares pixel perturbation whose
    patch embedding is ``noise`` (patches, dim), added to the normalised image and mapped back to
    [0, 1]. (The corruption itself lives in embedding space; this is only its picture.)"""
    pe = model.patch_embed.proj
    if not isinstance(pe, torch.nn.Conv2d) or pe.kernel_size != pe.stride:
        raise LocateError("corrupted_view needs a non-overlapping convolutional patch embedding")
    w = pe.weight.reshape(pe.out_channels, -1).double()  # (D, 3*p*p)
    delta = torch.linalg.lstsq(w, noise.double().T).solution.T  # (patches, 3*p*p)
    (ph, pw), (gh, gw) = pe.kernel_size, model.patch_embed.grid_size
    delta = delta.view(gh, gw, 3, ph, pw).permute(2, 0, 3, 1, 4).reshape(1, 3, gh * ph, gw * pw)
    x = runner.inputs(image[None]).cpu() + delta.float()
    mean = torch.tensor(runner.cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(runner.cfg.std).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- patch attribution
@torch.inference_mode()
def patch_attribution(
    model,
    runner: Runner,
    image: np.ndarray,
    target: int,
    *,
    n_masks: int,
    keep_prob: float,
    alpha: float,
    seed: int,
) -> np.ndarray:
    """Lasso attribution over patches (ASTRA): random keep-masks -> p(target) -> sparse linear fit.

    Dropped patches are set to 0 in the normalised image (the normalisation mean). The score is
    standardised before the fit, so ``alpha`` does not depend on the scale of the probabilities.
    Returns the coefficients on the patch grid (grid_h, grid_w), in units of probability:
    positive = the patch supports ``target``.
    """
    model.eval()
    gh, gw = model.patch_embed.grid_size
    x = runner.inputs(image[None])
    rng = np.random.default_rng(seed)
    masks = (rng.random((n_masks, gh * gw)) < keep_prob).astype(np.float32)
    ph, pw = x.shape[-2] // gh, x.shape[-1] // gw
    m = torch.from_numpy(masks).view(n_masks, 1, gh, gw).to(runner.device)
    m = m.repeat_interleave(ph, 2).repeat_interleave(pw, 3)
    scores = torch.softmax(model(x * m).float(), -1)[:, target].cpu().numpy().astype(np.float64)
    sd = scores.std()
    if sd == 0:  # the masks change nothing: no patch matters
        return np.zeros((gh, gw))
    # lazy: scikit-learn's linear models add ~1.5 s to each process importing this module (the
    # kernels of 04-07 and the CLI's preflight), which never fit a Lasso
    from sklearn.linear_model import Lasso

    fit = Lasso(alpha=alpha, max_iter=10000).fit(masks, (scores - scores.mean()) / sd)
    return fit.coef_.reshape(gh, gw) * sd  # back in units of probability
