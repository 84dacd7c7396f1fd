"""What every dataset is: its description (:class:`DatasetInfo`), the loaded official splits
(:class:`Data`), the registry of known datasets, and the error a bad data file raises."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


# MedMNIST sets made of slices of 3D CT scans (MedMNIST v2, Yang et al. 2023): several slices come
# from one scan, so samples are not independent, and train / val and test come from different
# scans, so Test is shifted from the sets a regression budget is measured on (FT-Val, FT-Train)
SLICED_SCANS = ("organamnist", "organcmnist", "organsmnist")


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

    def __post_init__(self):
        # read-only, so a content key computed once holds for the process (vitedit.predcache)
        for a in self.images.values():
            if isinstance(a, np.ndarray):
                a.flags.writeable = False

    def counts(self, split: str) -> np.ndarray:
        return np.bincount(self.labels[split], minlength=self.info.n_classes)


def check_classes(labels: dict[str, np.ndarray], label_names, where: str) -> None:
    """Refuse labels that hold fewer than two classes across the official splits: there is nothing
    to classify (every model "classifies all correctly"), nothing to edit."""
    present = sorted(set().union(*(np.unique(np.asarray(v)).tolist() for v in labels.values())))
    if len(present) < 2:
        names = ", ".join(f"{c} ({label_names[c]!r})" for c in present) or "none"
        raise DataError(
            f"{where}: the labels hold {len(present)} class ({names}) of the dataset's "
            f"{len(label_names)}; a classifier needs at least two classes to learn, err and be "
            "edited. Check that the file is the whole dataset (not one class's slice)"
        )


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
