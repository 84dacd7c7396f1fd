"""The MERIT liver-fibrosis data (``imgs.npy``, ``labs.npy``): validated, and split once into
fixed stratified train / val / test partitions (its "official" split)."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import paths
from .core import (
    LIVER_FRACTIONS,
    LIVER_VARIANTS,
    SPLITS,
    Data,
    DataError,
    check_classes,
    dataset_info,
)
from .medmnist_files import check_labels, md5sum


# --------------------------------------------------------------------------- liver (MERIT)
def _liver_image(item: Any, i: int, folder: Path) -> np.ndarray:
    if not isinstance(item, Mapping):
        raise DataError(
            f"{folder / 'imgs.npy'}: entry {i} is a {type(item).__name__}, expected a dict holding "
            f"one (256, 256, 1) float32 image (MERIT format, e.g. {{'4': array}})"
        )
    arrays = [v for v in item.values() if isinstance(v, np.ndarray)]
    img = item.get("4") if "4" in item else (arrays[0] if len(arrays) == 1 else None)
    if not isinstance(img, np.ndarray):
        raise DataError(
            f"{folder / 'imgs.npy'}: entry {i} has keys {list(item)}; expected one image array "
            f"(MERIT stores it under key '4')"
        )
    if img.ndim != 3 or img.shape[2] != 1 or not np.issubdtype(img.dtype, np.floating):
        raise DataError(
            f"{folder / 'imgs.npy'}: entry {i} is {img.dtype} {img.shape}; expected float32 "
            f"(H, W, 1), z-scored"
        )
    if not np.isfinite(img).all():
        raise DataError(
            f"{folder / 'imgs.npy'}: entry {i} holds values that are not finite (NaN or inf); "
            f"fix or remove it"
        )
    return img[..., 0].astype(np.float32)


def stratified_partition(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Split indices class by class into parts of the given fractions (seeded, exact per class)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    cum = np.cumsum(fractions) / np.sum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(cum * len(idx)).astype(int)
        start = 0
        for k, end in enumerate(bounds):
            parts[k].extend(idx[start:end].tolist())
            start = end
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _read(f: Path, pickled: bool) -> np.ndarray:
    """One of the liver files, or a DataError naming it and the likely cause."""
    try:
        return np.load(f, allow_pickle=pickled)
    except ValueError as e:
        if not pickled and "allow_pickle" in str(e):
            raise DataError(
                f"{f} holds Python objects; labs.npy must hold integer stages 0-3"
            ) from None
        raise DataError(f"cannot read {f} ({e}): a corrupt file? Copy it again") from None
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(
            f"cannot read {f} ({type(e).__name__}: {str(e)[:100]}): truncated or corrupt? Copy "
            "it again"
        ) from None


def load_liver(name: str, data_path: str | None, split_seed: int = 0) -> Data:
    info = dataset_info(name)
    if not data_path:
        raise DataError(
            f"dataset {name} needs data_path: the folder holding imgs.npy and labs.npy "
            f"(MERIT liver-fibrosis data), e.g. --data-path dataset/"
        )
    folder = paths.resolve(data_path)
    for fname in ("imgs.npy", "labs.npy"):
        if not (folder / fname).is_file():
            raise DataError(
                f"liver data file {folder / fname} not found. {name} expects imgs.npy (object array "
                f"of dicts with one (256, 256, 1) float32 image) and labs.npy (labels 0-3) in data_path."
            )
    raw_imgs = _read(folder / "imgs.npy", pickled=True)
    raw_labs = _read(folder / "labs.npy", pickled=False)
    if raw_imgs.ndim != 1 or raw_imgs.dtype != object:
        raise DataError(
            f"{folder / 'imgs.npy'} is {raw_imgs.dtype} {raw_imgs.shape}; expected a 1-D object "
            f"array of dicts (MERIT format)"
        )
    stage = check_labels(raw_labs, 4, str(folder / "labs.npy"))
    if len(stage) != len(raw_imgs):
        raise DataError(f"{folder}: {len(raw_imgs)} images but {len(stage)} labels")
    imgs = [_liver_image(item, i, folder) for i, item in enumerate(raw_imgs)]
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise DataError(f"{folder / 'imgs.npy'}: images differ in shape ({sorted(shapes)[:3]}...)")
    images = np.stack(imgs)
    labels = np.asarray(LIVER_VARIANTS[name][1])[stage]
    check_classes({"all": labels}, info.label_names, f"{folder / 'labs.npy'} as {name}")
    parts = stratified_partition(labels, LIVER_FRACTIONS, split_seed)
    digest = hashlib.md5(
        (md5sum(folder / "imgs.npy") + md5sum(folder / "labs.npy")).encode()
    ).hexdigest()
    return Data(
        info,
        {s: images[p] for s, p in zip(SPLITS, parts)},
        {s: labels[p] for s, p in zip(SPLITS, parts)},
        folder,
        digest,
    )
