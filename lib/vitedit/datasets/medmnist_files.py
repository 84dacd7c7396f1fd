"""Finding, checking and loading MedMNIST files: the search roots, the MD5 of the published
release, the keys, shapes, dtypes and label range of every split, and the optional download."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .. import paths
from .core import (
    MEDMNIST_SIZES,
    SPLITS,
    Data,
    DataError,
    _medmnist_info,
    check_classes,
    dataset_info,
)

DATA_ENV = "VITEDIT_DATA_ROOT"


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
        if p.is_dir():
            raise DataError(
                f"data_path {p} is a folder, not a .npz file; give the data file itself, or a "
                f"folder holding {fname}"
            )
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
                if dtype.hasobject:  # numpy would refuse it later with a message naming no file
                    raise DataError(
                        f"{path}: '{member[:-4]}' holds Python objects (dtype object), which are "
                        "never unpickled from a data file; store numbers (uint8 images, integer "
                        "labels)"
                    )
                out[member[:-4]] = (shape, dtype)
    except DataError:
        raise
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
    if labels.dtype.kind not in "iubf":
        raise DataError(
            f"{where}: labels are {labels.dtype} (e.g. {labels[:3].tolist()}); expected integer "
            "class indices 0..n-1 (map names to indices first)"
        )
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
    check_classes(labels, info.label_names, str(path))
    return Data(info, images, labels, path, digest)
