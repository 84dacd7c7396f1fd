"""Models' predictions cached by content (``<checkpoint_dir>/predictions``; safe to delete): the
base model is evaluated once per checkpoint and set, not once per experiment, and a head edit is
evaluated from the cached pre-logit features without a backbone pass."""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from pathlib import Path

import numpy as np
import timm
import torch

from . import models
from .models import Runner
from .paths import atomic_write_bytes

# part of every cache key: raise it when preprocessing or the forward pass changes
CACHE_VERSION = 1


def prediction_key(model, images: np.ndarray, runner: Runner, skip: str | None = None) -> str:
    """What determines a model's outputs on ``images``: its weights (those whose name starts with
    ``skip`` left out), the images' bytes, the model config, the batch size (fp32 blocking), the
    device type and the torch version."""
    h = _weights_hash(model, skip)
    dtype, shape = _dtype_shape(images)
    h.update(f"{dtype}|{shape}|{runner.cfg!r}|{runner.batch_size}|skip={skip}".encode())
    dev = runner.device
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    h.update(f"{CACHE_VERSION}|{dev.type}|{gpu}|{torch.__version__}|{timm.__version__}".encode())
    _update_with_images(h, images)
    return h.hexdigest()


def _hash_weights(model, skip: str | None):
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        if skip and name.startswith(skip):
            continue
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h


# models whose weights a block promised not to change (weights_fixed), by identity, each kept
# alive with its hashers: {id(model): (model, {skip: hasher after the weights})}
_FIXED = threading.local()


@contextlib.contextmanager
def weights_fixed(*models):
    """Inside the block ``models``' weights do not change: the pass over every weight that
    :func:`prediction_key` makes (the costly part of a key: megabytes per model) is made once per
    model, not once per image set (issue 26). The keys are the same as without the block."""
    memo = getattr(_FIXED, "memo", None)
    if memo is None:
        memo = _FIXED.memo = {}
    added = [id(m) for m in models if id(m) not in memo]
    memo.update({id(m): (m, {}) for m in models if id(m) in added})
    try:
        yield
    finally:
        for i in added:
            memo.pop(i, None)


def _weights_hash(model, skip: str | None):
    """A hasher that has read ``model``'s weights (those not starting with ``skip``): computed, or
    a copy of the one computed earlier in a :func:`weights_fixed` block of this model."""
    hit = (getattr(_FIXED, "memo", None) or {}).get(id(model))
    if hit is None or hit[0] is not model:
        return _hash_weights(model, skip)
    if skip not in hit[1]:
        hit[1][skip] = _hash_weights(model, skip)
    return hit[1][skip].copy()


# the content keys of read-only image arrays (a loaded dataset's splits, vitedit.datasets.Data),
# by identity; each array is kept alive with its key, so its id cannot be reused by another array
_SOURCE_KEYS: dict[int, tuple[np.ndarray, str]] = {}


def _update_with_images(h, images: np.ndarray) -> None:
    """The images' content: their bytes, or for a view of a read-only array (a split's images,
    :class:`vitedit.splits.ImageView`) that array's content key, memoised, and the view's indices —
    a grid point's lookups then hash kilobytes of indices, not the set's megabytes of images."""
    source = getattr(images, "source", None)
    if isinstance(source, np.ndarray) and not source.flags.writeable:
        h.update(f"view|{_source_key(source)}|".encode())
        h.update(np.ascontiguousarray(images.index, dtype=np.int64).tobytes())
        return
    for sl in models.iter_batches(len(images), 4096):  # a view is never materialised whole
        h.update(np.ascontiguousarray(images[sl]).tobytes())


def _dtype_shape(images) -> tuple[np.dtype, tuple[int, ...]]:
    source = getattr(images, "source", None)  # a view: read no image
    first = source[:1] if isinstance(source, np.ndarray) else np.asarray(images[:1])
    return first.dtype, (len(images), *first.shape[1:])


def _source_key(source: np.ndarray) -> str:
    hit = _SOURCE_KEYS.get(id(source))
    if hit is None or hit[0] is not source:
        if len(_SOURCE_KEYS) >= 16:  # a few datasets' splits per process
            _SOURCE_KEYS.clear()
        hit = _SOURCE_KEYS[id(source)] = (source, images_key(source))
    return hit[1]


def images_key(images: np.ndarray) -> str:
    """The content of an image set alone (its dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    dtype, shape = _dtype_shape(images)
    h.update(f"{dtype}|{shape}".encode())
    _update_with_images(h, images)
    return h.hexdigest()


def _cached(path: Path, compute, rows: int) -> np.ndarray:
    """``path``'s array, or ``compute()`` written there atomically. Content-keyed, so parallel
    writers write the same bytes. A file that cannot be read or has the wrong shape (a killed
    writer) is recomputed; a failed write (full disk, read-only folder) costs the cache, not the
    result."""
    if path.exists():
        try:
            arr = np.load(path)
            if arr.ndim == 2 and len(arr) == rows and arr.dtype == np.float32:
                return arr
        except (OSError, ValueError, EOFError):
            pass
    arr = np.asarray(compute(), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, arr)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    return arr


def _has_linear_head(model) -> bool:
    return hasattr(model, "forward_head") and isinstance(
        getattr(model, "head", None), torch.nn.Linear
    )


def cached_probs(model, images, runner: Runner, cache_dir: Path | None) -> np.ndarray:
    """Probabilities of ``model`` on ``images``. With ``cache_dir`` (on the CPU, for a model with a
    linear head): the pre-logit features are cached by the backbone's weights and the images, and
    the head is applied to them by the same batches (bit-identical to a full pass in fp32). The base
    model's features are then computed once per set, not once per experiment, a head edit is
    evaluated without a backbone pass, and notebook 06 reads the FT-Train features that 04
    computed. Other models (or CUDA's bf16): the probabilities are cached by the whole model."""
    if cache_dir is None:
        return runner.probs(model, images).numpy()
    cache_dir = Path(cache_dir)
    if runner.device.type == "cpu" and _has_linear_head(model):
        key = prediction_key(model, images, runner, skip="head.")
        feats = _cached(
            cache_dir / f"{key}.features.npy",
            lambda: runner.pre_logits(model, images).numpy(),
            len(images),
        )
        logits = models.head_logits(model, torch.from_numpy(feats), runner.batch_size)
        return torch.softmax(logits, -1).numpy()
    key = prediction_key(model, images, runner)
    return _cached(
        cache_dir / f"{key}.npy", lambda: runner.probs(model, images).numpy(), len(images)
    )
