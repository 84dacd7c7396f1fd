"""Datasets: MedMNIST 2D files (through medmnist's metadata) and the MERIT liver-fibrosis data.

Every loader validates the file (existence, MD5, keys, shapes, label range) and returns a
:class:`Data` holding the three *official* splits (train / val / test) as numpy arrays.
The 4-set protocol is built on top of these by :mod:`vitedit.splits`.

- :mod:`.core` — :class:`DatasetInfo`, :class:`Data`, the registry of known datasets;
- :mod:`.medmnist_files` — finding, checking and loading MedMNIST files;
- :mod:`.liver` — the liver data and its fixed stratified split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import medmnist_files
from .core import (
    LIVER_FRACTIONS,
    LIVER_VARIANTS,
    MEDMNIST_SIZES,
    ORIGINAL_MEDMNIST,
    SPLITS,
    SUPPORTED_TASKS,
    Data,
    DataError,
    DatasetInfo,
    check_classes,
    dataset_info,
    known_datasets,
)
from .liver import load_liver, stratified_partition
from .medmnist_files import (
    DATA_ENV,
    check_labels,
    check_medmnist_file,
    expected_md5,
    load_medmnist,
    locate_medmnist,
    md5sum,
    medmnist_filename,
)

__all__ = [
    "DATA_ENV",
    "LIVER_FRACTIONS",
    "LIVER_VARIANTS",
    "MEDMNIST_SIZES",
    "ORIGINAL_MEDMNIST",
    "SPLITS",
    "SUPPORTED_TASKS",
    "Data",
    "DataError",
    "DatasetInfo",
    "check_classes",
    "check_labels",
    "check_medmnist_file",
    "dataset_info",
    "expected_md5",
    "known_datasets",
    "load",
    "load_liver",
    "load_medmnist",
    "locate_medmnist",
    "md5sum",
    "medmnist_files",
    "medmnist_filename",
    "stratified_partition",
]


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
