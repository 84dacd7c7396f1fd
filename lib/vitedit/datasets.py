"""Datasets: MedMNIST 2D files (through medmnist's metadata) and the MERIT liver-fibrosis data.

Every loader validates the file (existence, MD5, keys, shapes, label range) and returns a
:class:`Data` holding the three *official* splits (train / val / test) as numpy arrays.
The 4-set protocol is built on top of these by :mod:`vitedit.splits`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import paths

DATA_ENV = "VITEDIT_DATA_ROOT"
SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)
# the MedMNIST 2D sets of the original system (its --download benchmark covers these six)
ORIGINAL_MEDMNIST = (
    "pathmnist",
    "dermamnist",
    "retinamnist",
    "organamnist",
    "bloodmnist",
    "tissuemnist",
)
LIVER_VARIANTS = {
    # name: (label names, mapping from the 4 raw stages F0, F1, F2, F3-F4)
    "liver4": (["F0", "F1", "F2", "F3-F4"], [0, 1, 2, 3]),
    "liver2s": (["F0-F2", "F3-F4"], [0, 0, 0, 1]),
    "liver2a": (["F0", "F1-F4"], [0, 1, 1, 1]),
}
LIVER_FRACTIONS = (0.6, 0.2, 0.2)
SUPPORTED_TASKS = ("multi-class", "binary-class", "ordinal-regression")


class DataError(ValueError):
    """A data file is missing or malformed; the message names it and says how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # "medmnist" | "liver"
    task: str
    n_channels: int
    label_names: tuple[str, ...]
    description: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


@dataclass
class Data:
    info: DatasetInfo
    images: dict[str, np.ndarray]  # split -> (N, H, W) or (N, H, W, C); uint8 or float32 (z-scored)
    labels: dict[str, np.ndarray]  # split -> (N,) int64
    path: Path
    md5: str  # MD5 of the file (liver: of both files' MD5s)

    def counts(self, split: str) -> np.ndarray:
        return np.bincount(self.labels[split], minlength=self.info.n_classes)


# --------------------------------------------------------------------------- registry
@functools.lru_cache(maxsize=1)
def _medmnist_info() -> dict[str, dict]:
    """medmnist's dataset metadata (``medmnist.info.INFO``), read without importing the package
    (``import medmnist`` loads its evaluator and costs ~1.5 s in every notebook of a sweep)."""
    spec = importlib.util.find_spec("medmnist")
    info_file = Path(next(iter(spec.submodule_search_locations))) / "info.py" if spec else None
    if info_file is not None and info_file.is_file():
        mod_spec = importlib.util.spec_from_file_location("_vitedit_medmnist_info", info_file)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        info = mod.INFO
    else:  # an unusual install layout: the regular import
        # lazy: importing medmnist costs ~1.5 s per notebook (see above)
        from medmnist import INFO as info
    return {k: v for k, v in info.items() if not k.endswith("3d")}


def known_datasets() -> list[str]:
    """Every dataset :func:`dataset_info` accepts (MedMNIST 2D single-label ones and the liver sets)."""
    single = [k for k, v in _medmnist_info().items() if v["task"] in SUPPORTED_TASKS]
    return sorted(single) + list(LIVER_VARIANTS)


def dataset_info(name: str) -> DatasetInfo:
    if name in LIVER_VARIANTS:
        labels, _ = LIVER_VARIANTS[name]
        task = "binary-class" if len(labels) == 2 else "multi-class"
        return DatasetInfo(
            name, "liver", task, 1, tuple(labels), "Liver fibrosis ultrasound (MERIT)"
        )
    info = _medmnist_info().get(name)
    if info is None:
        raise DataError(f"unknown dataset '{name}'. Known datasets: {', '.join(known_datasets())}")
    if info["task"] not in SUPPORTED_TASKS:
        raise DataError(
            f"dataset '{name}' has task '{info['task']}'; only {', '.join(SUPPORTED_TASKS)} "
            f"are supported (single-label classification)"
        )
    labels = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    return DatasetInfo(
        name, "medmnist", info["task"], info["n_channels"], labels, info["description"]
    )


# --------------------------------------------------------------------------- locating files
def medmnist_filename(name: str, size: int) -> str:
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def search_roots(data_path: str | None = None) -> list[Path]:
    """Data roots in priority order: explicit path > $VITEDIT_DATA_ROOT > data/ > ~/.medmnist."""
    roots = []
    if data_path:
        roots.append(paths.resolve(data_path))
    if os.environ.get(DATA_ENV):
        roots.append(paths.resolve(os.environ[DATA_ENV]))
    roots.append(paths.project_root() / "data")
    roots.append(Path("~/.medmnist").expanduser())
    return roots


def md5sum(path: Path) -> str:
    return paths.file_hash(path, "md5")


def expected_md5(name: str, size: int) -> str | None:
    info = _medmnist_info().get(name, {})
    return info.get("MD5" if size == 28 else f"MD5_{size}")


def locate_medmnist(
    name: str, size: int, data_path: str | None = None, download: bool = False, log=print
) -> Path:
    """The .npz file of ``name`` at ``size``; downloads only when ``download`` is true."""
    dataset_info(name)
    if size not in MEDMNIST_SIZES:
        raise DataError(f"size {size} is not a MedMNIST size; use one of {MEDMNIST_SIZES}")
    fname = medmnist_filename(name, size)
    if data_path and paths.resolve(data_path).suffix == ".npz":
        p = paths.resolve(data_path)
        if p.is_file():
            return p
        raise DataError(
            f"data file {p} does not exist (given as data_path). Fix the path, or leave "
            f"data_path empty to search {', '.join(str(r) for r in search_roots()[0:])}."
        )
    roots = search_roots(data_path)
    if data_path and not download:  # an explicit folder is the only place looked at
        folder = roots[0]
        if (folder / fname).is_file():
            return folder / fname
        what = "does not exist" if not folder.exists() else "does not hold it"
        raise DataError(
            f"MedMNIST file {fname} not found: data_path {folder} {what}. Fix data_path (a folder "
            f"holding {fname}, or the .npz file itself), allow the download into it (--download), or "
            f"leave data_path empty to search {', '.join(str(r) for r in search_roots()[:-1])} "
            f"and ~/.medmnist."
        )
    for root in roots[:1] if data_path else roots:
        if (root / fname).is_file():
            return root / fname
    if download:
        target = (
            roots[0] if data_path or os.environ.get(DATA_ENV) else paths.project_root() / "data"
        )
        target.mkdir(parents=True, exist_ok=True)
        log(f"{fname} not found locally; downloading it through medmnist into {target} ...")
        import medmnist  # lazy: ~1.5 s, needed only to download

        cls = getattr(medmnist, _medmnist_info()[name]["python_class"])
        cls(split="train", root=str(target), size=size, download=True)
        if (target / fname).is_file():
            return target / fname
        raise DataError(f"medmnist reported no error but {target / fname} is still missing")
    searched = "\n  ".join(str(r / fname) for r in roots)
    raise DataError(
        f"MedMNIST file {fname} not found. Searched:\n  {searched}\n"
        f"Get it by allowing the download (CLI: --download; params: download: true), or fetch it from "
        f"https://medmnist.com / zenodo record 10519652 and put it in one of those folders "
        f"(or point data_path / ${DATA_ENV} at it)."
    )


# --------------------------------------------------------------------------- validation
def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays in an .npz without reading the data."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                out[member[:-4]] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npz file ({e}); download it again") from None
    return out


def check_medmnist_file(path: Path, name: str, size: int, verify_md5: bool = True) -> str | None:
    """Validate a MedMNIST .npz without loading the images; return its MD5."""
    info = dataset_info(name)
    digest = md5sum(path)
    if verify_md5:
        want = expected_md5(name, size)
        if want and digest != want:
            raise DataError(
                f"{path} fails its MD5 check (got {digest}, medmnist expects {want} for "
                f"{medmnist_filename(name, size)}): the file is corrupt or another dataset/size. "
                f"Download it again, or set verify_md5: false if you know what you are doing."
            )
    headers = _npz_headers(path)
    for split in SPLITS:
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            if key not in headers:
                raise DataError(
                    f"{path} lacks the array '{key}' (has: {', '.join(sorted(headers))}); "
                    f"a MedMNIST file holds train/val/test _images and _labels"
                )
        (ishape, idtype), (lshape, _) = headers[f"{split}_images"], headers[f"{split}_labels"]
        if ishape[0] == 0:
            counts = {s: headers[f"{s}_images"][0][0] for s in SPLITS if f"{s}_images" in headers}
            raise DataError(
                f"{path}: '{split}_images' holds 0 images (train/val/test: {counts}); every set of "
                f"the 4-set protocol needs samples (val is FT-Val: early stopping and selection)"
            )
        if idtype != np.uint8:
            raise DataError(_not_uint8(path, f"{split}_images", idtype))
        want_img = (size, size) if info.n_channels == 1 else (size, size, info.n_channels)
        if tuple(ishape[1:]) != want_img:
            raise DataError(
                f"{path}: '{split}_images' has shape {ishape}, expected (N, {', '.join(map(str, want_img))}) "
                f"for {name} at size {size}"
            )
        if lshape[0] != ishape[0] or (len(lshape) == 2 and lshape[1] != 1) or len(lshape) > 2:
            raise DataError(
                f"{path}: '{split}_labels' has shape {lshape}, expected ({ishape[0]}, 1) "
                f"to match '{split}_images'"
            )
    return digest


def _not_uint8(path: Path, key: str, dtype) -> str:
    """The message for MedMNIST images that are not uint8 (non-finite values are named)."""
    msg = f"{path}: '{key}' is {np.dtype(dtype).name}"
    if np.issubdtype(dtype, np.floating):
        with np.load(path) as f:
            images = f[key]  # read once (each f[key] decompresses the array again)
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
        if len(bad):
            msg += f" and holds values that are not finite ({len(bad)} images, first at index {bad[0]})"
    return (
        msg
        + ". MedMNIST images are uint8 (0-255) and are scaled by /255 and the model's mean/std; "
        "other images are refused rather than guessed at. Convert them, e.g. "
        "np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for images in [0, 1]."
    )


def check_labels(labels: np.ndarray, n_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iub":
        frac = ~np.isfinite(labels.astype(float)) | (labels.astype(float) % 1 != 0)
        if frac.any():
            raise DataError(
                f"{where}: labels must be integers (class indices); found {labels[frac][:3].tolist()} "
                f"at index {np.flatnonzero(frac)[0]}"
            )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise DataError(
            f"{where}: labels out of range (found {sorted(set(bad.tolist()))[:5]}, "
            f"expected 0..{n_classes - 1})"
        )
    return labels.astype(np.int64)


def load_medmnist(
    name: str,
    size: int = 28,
    data_path: str | None = None,
    download: bool = False,
    verify_md5: bool = True,
    log=print,
) -> Data:
    info = dataset_info(name)
    path = locate_medmnist(name, size, data_path, download, log=log)
    digest = check_medmnist_file(path, name, size, verify_md5)
    with np.load(path) as f:
        images = {s: f[f"{s}_images"] for s in SPLITS}
        labels = {
            s: check_labels(f[f"{s}_labels"], info.n_classes, f"{path} '{s}_labels'")
            for s in SPLITS
        }
    return Data(info, images, labels, path, digest)


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
    try:
        raw_imgs = np.load(folder / "imgs.npy", allow_pickle=True)
        raw_labs = np.load(folder / "labs.npy", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read liver data in {folder}: {e}") from None
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


# --------------------------------------------------------------------------- entry point
def load(params: Mapping[str, Any], log=print) -> Data:
    """Load and validate the dataset named by ``params`` (keys of the 'data' stage)."""
    name = params["dataset"]
    if name in LIVER_VARIANTS:
        return load_liver(name, params.get("data_path"), params.get("liver_split_seed", 0))
    return load_medmnist(
        name,
        params.get("size", 28),
        params.get("data_path"),
        params.get("download", False),
        params.get("verify_md5", True),
        log=log,
    )
