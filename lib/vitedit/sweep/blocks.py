"""A benchmark sweep: one block of the sweep per dataset (``datasets``), each with its own seeds and
fixed values (``per_dataset``), restricted to the datasets that can be had here."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .. import datasets as datasets_mod
from .. import params as params_mod

PER_DATASET_KEYS = {"params", "seeds", "set"}


class SweepError(params_mod.ParamError):
    """A benchmark's datasets or per-dataset blocks are invalid (a SweepError to the CLI)."""


def as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def check_datasets(spec: Mapping[str, Any], grid: Mapping[str, Any]) -> tuple[list, dict]:
    """``datasets`` (a benchmark: each dataset is a block of the sweep) and ``per_dataset`` (each
    block's own parameter files (the dataset's recipe, e.g. ``params/bloodmnist.yaml``), seeds and
    fixed values, e.g. fewer seeds where training is long)."""
    ds_list = [str(d) for d in as_list(spec.get("datasets"))]
    per = spec.get("per_dataset") or {}
    if not isinstance(per, dict):
        raise SweepError(
            "'per_dataset' must map dataset names to {params: [...], seeds: [...], set: {...}}"
        )
    if ds_list and "dataset" in grid:
        raise SweepError(
            "give the datasets either as the spec's 'datasets' list or as a grid key, not both"
        )
    known = datasets_mod.known_datasets()
    bad = [d for d in ds_list if d not in known]
    if bad:
        raise SweepError(f"unknown dataset(s) {bad} in 'datasets'; known: {', '.join(known)}")
    out = {}
    for d, block in per.items():
        if d not in ds_list:
            raise SweepError(f"per_dataset: '{d}' is not in the spec's 'datasets' {ds_list}")
        block = block or {}
        unknown = set(block) - PER_DATASET_KEYS
        if unknown:
            raise SweepError(
                f"per_dataset '{d}': unknown key(s) {sorted(unknown)}; known: {sorted(PER_DATASET_KEYS)}"
            )
        fixed = params_mod.validate(block.get("set") or {}, where=f"per_dataset '{d}' set")
        if "dataset" in fixed or "run_dir" in fixed:
            raise SweepError(f"per_dataset '{d}' set: dataset and run_dir are the sweep's to set")
        if "seeds" in block and not as_list(block["seeds"]):
            raise SweepError(f"per_dataset '{d}': 'seeds' is empty; give a seed or remove the key")
        seeds = [params_mod.validate({"seed": x})["seed"] for x in as_list(block.get("seeds"))]
        files = [str(f) for f in as_list(block.get("params"))]
        for f in files:
            other = params_mod.load_yaml(f).get("dataset", d)
            if other != d:
                raise SweepError(f"per_dataset '{d}': its parameter file {f} is for '{other}'")
        out[d] = {"params": files, "seeds": seeds, "set": fixed}
    return ds_list, out


def override_seeds(spec: dict, seeds: list) -> None:
    """``--seeds``: these seeds for every dataset, over the spec's and its per-dataset seeds."""
    spec["seeds"] = list(seeds)
    spec["per_dataset"] = {
        d: {k: v for k, v in (b or {}).items() if k != "seeds"}
        for d, b in (spec.get("per_dataset") or {}).items()
    }


def restrict_datasets(spec: dict, args: argparse.Namespace) -> dict:
    """A benchmark spec runs the datasets that ``--datasets`` names (default: all of its list) and
    that can be had: a MedMNIST file found locally (any with ``--download``), a liver set when
    ``--liver-dir`` gives its folder. Each left-out dataset is said in words."""
    wanted = [str(d) for d in as_list(spec.get("datasets"))]
    if args.datasets:
        bad = [d for d in args.datasets if d not in wanted]
        if bad:
            raise SweepError(f"--datasets {bad} are not in the spec's datasets {wanted}")
        wanted = [d for d in wanted if d in args.datasets]
    download = bool(getattr(args, "download", False))
    liver_dir = getattr(args, "liver_dir", None)
    per = {d: dict(b or {}) for d, b in (spec.get("per_dataset") or {}).items()}
    stray = [d for d in per if d not in as_list(spec.get("datasets"))]
    if stray:  # a typo'd or forgotten dataset: said before the unavailable ones are dropped
        raise SweepError(f"per_dataset: {stray} not in the spec's 'datasets' {wanted}")
    keep = []
    for d in wanted:
        if d in datasets_mod.LIVER_VARIANTS:
            if not liver_dir:
                print(f"benchmark: skipping {d}: give its folder with --liver-dir DIR")
                continue
            block = per.setdefault(d, {})
            block["set"] = {**(block.get("set") or {}), "data_path": str(liver_dir)}
            keep.append(d)
            continue
        if download:
            keep.append(d)
            continue
        b = per.get(d, {})
        here = params_mod.resolve(
            *spec["params"], *as_list(b.get("params")), spec.get("set") or {}, b.get("set") or {}
        )
        try:
            datasets_mod.locate_medmnist(d, here["size"], here.get("data_path"), False)
        except datasets_mod.DataError:
            print(
                f"benchmark: skipping {d}: {d}_{here['size']} is not found locally "
                f"(--download gets it)"
            )
            continue
        keep.append(d)
    if not keep:
        raise SweepError(
            f"none of the benchmark's datasets {wanted} is available: put the MedMNIST files in "
            f"data/ (or $VITEDIT_DATA_ROOT), or allow --download"
        )
    spec["datasets"] = keep
    spec["per_dataset"] = {d: b for d, b in per.items() if d in keep}
    if download:
        spec["set"] = {**(spec.get("set") or {}), "download": True}
    return spec


FRESH_SEEDS = ("grid", "chosen")  # a fresh seed runs the whole grid, or the design seeds' choices


def check_flags(spec: Mapping[str, Any]) -> dict:
    """The spec's switches: ``in_process`` (true: the experiments of a (dataset, seed) run in one
    process, without notebooks: vitedit.sweep.inprocess) and ``fresh_seeds`` (``chosen``: a seed
    outside the design seeds runs only the settings they chose: vitedit.sweep.fresh)."""
    if not isinstance(spec.get("in_process", False), bool):
        raise SweepError(f"in_process must be true or false, not {spec['in_process']!r}")
    if spec.get("fresh_seeds", "grid") not in FRESH_SEEDS:
        raise SweepError(
            f"fresh_seeds must be one of {list(FRESH_SEEDS)}, not {spec['fresh_seeds']!r}"
        )
    swap = "second" in as_list((spec.get("grid") or {}).get("edit_selection") or [])
    if swap and spec.get("fresh_seeds", "grid") != "chosen":
        raise SweepError(
            "edit_selection 'second' (the cross-fit swap) runs only at the setting chosen for each "
            "seed on 'first': set fresh_seeds: chosen in the spec, or drop 'second' from the grid"
        )
    return {
        "in_process": spec.get("in_process", False),
        "fresh_seeds": spec.get("fresh_seeds", "grid"),
    }
