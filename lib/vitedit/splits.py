"""The 4-set protocol.

- FT-Train: a seeded, stratified ``ft_train_ratio`` of the official train split (training,
  editing statistics);
- Edit-Discovery: the rest of the official train split (errors to edit; never trained on);
- FT-Val: the official val split (early stopping / model selection only);
- Test: the official test split (final evaluation only).

Indices of FT-Train and Edit-Discovery are positions in the official train split; FT-Val and
Test are positions in the official val and test splits.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .datasets import Data, stratified_partition
from .paths import atomic_write_bytes, atomic_write_text, json_text

SETS = ("ft_train", "edit_discovery", "ft_val", "test")
SET_SOURCE = {"ft_train": "train", "edit_discovery": "train", "ft_val": "val", "test": "test"}
SET_LABEL = {
    "ft_train": "FT-Train",
    "edit_discovery": "Edit-Discovery",
    "ft_val": "FT-Val",
    "test": "Test",
}
INDEX_FILE = "split_indices.npz"
META_FILE = "split_meta.json"
COUNTS_FILE = "data_split_info.csv"


class SplitError(ValueError):
    pass


@dataclass
class Split:
    indices: dict[str, np.ndarray]  # set name -> positions in its official split
    seed: int
    ft_train_ratio: float
    dataset: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name in SETS:
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.indices[name], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def labels(self, data: Data, name: str) -> np.ndarray:
        return data.labels[SET_SOURCE[name]][self.indices[name]]

    def images(self, data: Data, name: str) -> np.ndarray:
        return data.images[SET_SOURCE[name]][self.indices[name]]

    def view(self, data: Data, name: str, positions: np.ndarray | None = None) -> ImageView:
        """The images of set ``name`` (at ``positions`` within it) without copying them: batches are
        read from the loaded official split as they are needed (large datasets are never held in
        memory twice)."""
        idx = self.indices[name] if positions is None else self.indices[name][positions]
        return ImageView(data.images[SET_SOURCE[name]], np.asarray(idx, dtype=int))


class ImageView:
    """``source[index]`` read lazily: ``len``, slicing and integer-array indexing read only those
    images; ``np.asarray(view)`` materialises it (only small sets should be)."""

    def __init__(self, source: np.ndarray, index: np.ndarray):
        self.source, self.index = source, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.source.shape[1:])

    def __getitem__(self, key):
        """An int gives one image; a slice or an index array gives those images (only they are read)."""
        return self.source[self.index[key]]

    def take(self, positions) -> ImageView:
        return ImageView(self.source, self.index[np.asarray(positions, dtype=int)])

    def __array__(self, dtype=None, copy=None):
        out = self.source[self.index]
        return out.astype(dtype) if dtype is not None else out


def make_split(data: Data, ft_train_ratio: float, seed: int) -> Split:
    """Stratified FT-Train / Edit-Discovery split of the official train split."""
    if not 0 < ft_train_ratio < 1:
        raise SplitError(f"ft_train_ratio must lie strictly between 0 and 1, got {ft_train_ratio}")
    train_labels = data.labels["train"]
    ft, ed = stratified_partition(train_labels, (ft_train_ratio, 1 - ft_train_ratio), seed)
    idx = {
        "ft_train": ft,
        "edit_discovery": ed,
        "ft_val": np.arange(len(data.labels["val"]), dtype=np.int64),
        "test": np.arange(len(data.labels["test"]), dtype=np.int64),
    }
    empty = [SET_LABEL[k] for k, v in idx.items() if len(v) == 0]
    if empty:
        counts = ", ".join(f"{SET_LABEL[k]} {len(v)}" for k, v in idx.items())
        raise SplitError(
            f"the 4-set protocol leaves {' and '.join(empty)} empty ({counts}; ft_train_ratio "
            f"{ft_train_ratio} of {len(train_labels)} official train samples): every set needs samples"
        )
    return Split(idx, seed, ft_train_ratio, data.info.name)


def check_split(split: Split, data: Data) -> None:
    """The protocol's invariants; raises SplitError on any violation."""
    ft, ed = split.indices["ft_train"], split.indices["edit_discovery"]
    n_train = len(data.labels["train"])
    if np.intersect1d(ft, ed).size:
        raise SplitError("FT-Train and Edit-Discovery overlap")
    if not np.array_equal(np.sort(np.concatenate([ft, ed])), np.arange(n_train)):
        raise SplitError(
            "FT-Train and Edit-Discovery do not together make up the official train split"
        )
    for name in ("ft_val", "test"):
        src = SET_SOURCE[name]
        if not np.array_equal(split.indices[name], np.arange(len(data.labels[src]))):
            raise SplitError(f"{SET_LABEL[name]} must be the whole official {src} split")


def counts_table(split: Split, data: Data) -> pd.DataFrame:
    """Samples per class per set (rows: sets; columns: class names, total, share of set)."""
    rows = []
    names = list(data.info.label_names)
    for name in SETS:
        c = np.bincount(split.labels(data, name), minlength=data.info.n_classes)
        row = {"set": SET_LABEL[name], "source": f"official {SET_SOURCE[name]}"}
        row.update({f"class_{i}_{n}": int(v) for i, (n, v) in enumerate(zip(names, c))})
        row["total"] = int(c.sum())
        rows.append(row)
    return pd.DataFrame(rows)


# what a class absent from a set costs (said in the data stage's warnings)
ABSENT_MEANS = {
    "ft_train": "the model never learns it",
    "edit_discovery": "none of its errors can be edited or held out",
    "ft_val": "early stopping and every selection are blind to it",
    "test": "its accuracy and regressions cannot be measured",
}


def class_warnings(split: Split, data: Data) -> list[str]:
    """A class with no image in one of the 4 sets, in words (one warning per set)."""
    out = []
    for name in SETS:
        c = np.bincount(split.labels(data, name), minlength=data.info.n_classes)
        missing = [f"{i} ({data.info.label_names[i]!r})" for i in np.flatnonzero(c == 0)]
        if missing:
            out.append(
                f"{SET_LABEL[name]} has no image of class {', '.join(missing)}: "
                f"{ABSENT_MEANS[name]}"
            )
    return out


def warnings_of(run_dir: Path) -> list[str]:
    """The data stage's warnings recorded with the split (``split_meta.json``)."""
    f = Path(run_dir) / META_FILE
    return json.loads(f.read_text()).get("warnings", []) if f.is_file() else []


def save(split: Split, run_dir: Path, data: Data) -> None:
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    np.savez(buf, **split.indices)
    atomic_write_bytes(run_dir / INDEX_FILE, buf.getvalue())
    meta = {
        "dataset": split.dataset,
        "seed": split.seed,
        "ft_train_ratio": split.ft_train_ratio,
        "digest": split.digest,
        "data_file": str(data.path),
        "data_md5": data.md5,
        "sizes": {k: int(len(v)) for k, v in split.indices.items()},
        "warnings": class_warnings(split, data),
    }
    atomic_write_text(run_dir / META_FILE, json_text(meta))
    atomic_write_text(run_dir / COUNTS_FILE, counts_table(split, data).to_csv(index=False))


def load(run_dir: Path, expect: dict | None = None, data: Data | None = None) -> Split:
    """The split saved in ``run_dir``; ``expect`` (dataset/seed/ft_train_ratio) must match it, and
    ``data`` must be the data it was made from (same MD5)."""
    run_dir = Path(run_dir)
    if not (run_dir / INDEX_FILE).is_file() or not (run_dir / META_FILE).is_file():
        raise SplitError(
            f"no split in {run_dir} ({INDEX_FILE} missing): run notebook 01_split "
            f"(CLI: --stage data) for this run folder first"
        )
    meta = json.loads((run_dir / META_FILE).read_text())
    with np.load(run_dir / INDEX_FILE) as f:
        idx = {k: f[k].astype(np.int64) for k in SETS}
    split = Split(idx, meta["seed"], meta["ft_train_ratio"], meta["dataset"])
    if split.digest != meta["digest"]:
        raise SplitError(
            f"{run_dir / INDEX_FILE} does not match its recorded digest: the file was altered"
        )
    if data is not None and meta.get("data_md5") and data.md5 != meta["data_md5"]:
        raise SplitError(
            f"the split in {run_dir} was made from data with MD5 {meta['data_md5']}, but this stage "
            f"loaded {data.path} (MD5 {data.md5}): point data_path at the run's data file, or use a "
            f"new run folder"
        )
    for key in ("dataset", "seed", "ft_train_ratio"):
        if expect is not None and key in expect and expect[key] != meta[key]:
            raise SplitError(
                f"the split in {run_dir} was made with {key}={meta[key]!r} but this stage has "
                f"{key}={expect[key]!r}; use the run's parameters or a new run folder"
            )
    return split
