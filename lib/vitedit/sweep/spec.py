"""A sweep spec: YAML (``params/sweeps/*.yaml``) with parameter files, fixed values, a grid, seeds,
methods, baselines and the selection criterion; validated before anything is written."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import methods as methods_mod
from .. import params as params_mod
from .. import paths
from ..columns import SELECTION_METRICS
from . import blocks
from .blocks import SweepError, as_list, check_datasets, check_flags, restrict_datasets
from .keys import LAYER_CHOICE, relevant_keys

SWEEPS_DIR = "reports/sweeps"
SPEC_KEYS = {
    "name",
    "description",
    "params",
    "set",
    "grid",
    "method_grids",
    "seeds",
    "methods",
    "baselines",
    "selection",
    "datasets",
    "per_dataset",
    "in_process",
    "fresh_seeds",
}
DEFAULT_SELECTION = {
    "metric": "val_acc_delta",
    "mode": "max",
    "tie_breakers": [["edit_fix_ratio", "max"], ["val_regression_rate", "min"]],
}


def edit_methods() -> list[str]:
    return methods_mod.names(baselines=False)


def baseline_aliases() -> dict[str, str]:
    """Spec name (``retrain``) -> method name (``baseline_retrain``)."""
    return {m.alias: m.name for m in methods_mod.REGISTRY.values() if m.is_baseline}


def load_spec(path: str | Path) -> dict:
    path = paths.resolve(path, Path.cwd())
    spec = params_mod.read_mapping(path, "sweep spec")  # see params/sweeps/ for examples
    spec.setdefault("name", path.stem)
    spec["params"] = [str(paths.resolve(f, path.parent)) for f in as_list(spec.get("params"))]
    for block in (spec.get("per_dataset") or {}).values():
        if isinstance(block, dict) and block.get("params"):
            block["params"] = [str(paths.resolve(f, path.parent)) for f in as_list(block["params"])]
    spec["_source"] = str(path)
    return spec


def check_spec(spec: Mapping[str, Any]) -> dict:
    """Validate a spec (unknown keys, grid keys and values, methods, selection); return it normalised."""
    unknown = set(spec) - SPEC_KEYS - {"_source"}
    if unknown:
        raise SweepError(f"unknown sweep spec key(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    name = str(spec.get("name") or "")
    if not name or "/" in name or name.startswith("."):
        raise SweepError(f"sweep name {name!r} must be a plain folder name")
    for f in spec.get("params", []):
        params_mod.load_yaml(f)  # existence, YAML and keys
    fixed = params_mod.validate(spec.get("set") or {}, where="the spec's 'set'")
    owned = [w for w, m in [("'set'", fixed), ("'grid'", spec.get("grid") or {})] if "run_dir" in m]
    owned += [
        f for f in spec.get("params", []) if params_mod.read_mapping(f).get("run_dir") is not None
    ]
    if owned:
        raise SweepError(
            f"run_dir is the sweep's to set (runs/<dataset>/<experiment> for each "
            f"experiment); remove it from {', '.join(owned)}"
        )
    clean_grid = check_grid(spec.get("grid") or {}, "grid")
    if "seeds" in spec and not as_list(spec["seeds"]):
        raise SweepError("'seeds' is empty; give at least one seed, or remove the key (seed 42)")
    seeds = [params_mod.validate({"seed": s})["seed"] for s in as_list(spec.get("seeds"))]
    methods = as_list(spec.get("methods", edit_methods()))
    bad = [m for m in methods if m not in edit_methods()]
    if bad:
        raise SweepError(f"unknown method(s) {bad}; choose from {edit_methods()}")
    bl = spec.get("baselines", list(baseline_aliases()))
    bl = [] if bl is False or bl is None else as_list(bl)
    bad = [b for b in bl if b not in baseline_aliases()]
    if bad:
        raise SweepError(
            f"unknown baseline(s) {bad}; choose from {list(baseline_aliases())} (or false for none)"
        )
    if not methods and not bl:
        raise SweepError("the sweep runs nothing: give 'methods' and/or 'baselines'")
    method_grids = check_method_grids(
        registered_grids(spec.get("method_grids"), [*methods, *bl]), [*methods, *bl]
    )
    selection = check_selection({**DEFAULT_SELECTION, **(spec.get("selection") or {})})
    ds_list, per_dataset = check_datasets(spec, clean_grid)
    return {
        "name": name,
        "description": spec.get("description", ""),
        "params": list(spec.get("params", [])),
        "set": fixed,
        "grid": clean_grid,
        "method_grids": method_grids,
        "seeds": seeds,
        "methods": methods,
        "baselines": bl,
        "selection": selection,
        "datasets": ds_list,
        "per_dataset": per_dataset,
        **check_flags(spec),  # in_process, fresh_seeds
        "source": spec.get("_source"),
    }


def check_grid(grid: Any, where: str) -> dict:
    if not isinstance(grid, dict):
        raise SweepError(f"'{where}' must map parameter names to lists of values")
    clean = {}
    for k, values in grid.items():
        if k not in params_mod.SCHEMA:
            raise SweepError(f"{where}: " + params_mod.unknown_key_message(k))
        if k == "seed":
            raise SweepError(
                f"{where}: give seeds with the spec's 'seeds' list (or --seeds), not as a grid key"
            )
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: '{k}' must be a non-empty list of values, got {values!r}")
        clean[k] = [params_mod.validate({k: v}, where=f"{where} '{k}'")[k] for v in values]
    return clean


REGISTERED = "registered"  # method_grids: every run method's grid as declared in the registry


def registered_grids(grids: Any, run: list[str]) -> Any:
    """``method_grids: registered``: each method's strength grid as the registry declares it
    (:attr:`vitedit.methods.Method.grid`); any other value is the spec's own."""
    if grids != REGISTERED:
        return grids or {}
    aliases = baseline_aliases()
    chosen = {name: methods_mod.get(aliases.get(name, name)) for name in run}
    return {name: dict(m.grid) for name, m in chosen.items() if m.grid}


def check_method_grids(grids: Any, run: list[str]) -> dict[str, dict]:
    """``method_grids``: a strength grid per method (name or baseline alias), crossed with the common
    grid for that method only; a key that does not change the method's result is refused."""
    if not isinstance(grids, dict):
        raise SweepError(
            f"'method_grids' must map method names to grids, or be '{REGISTERED}' (each method's "
            f"registered strength grid)"
        )
    aliases = baseline_aliases()
    out = {}
    for name, grid in grids.items():
        method = aliases.get(name, name)
        if name not in run and method not in run:
            raise SweepError(
                f"method_grids: '{name}' is not run by this sweep (methods/baselines: {run})"
            )
        clean = check_grid(grid, f"method_grids '{name}'")
        useless = [k for k in clean if k not in relevant_keys(method)]
        if useless:
            raise SweepError(
                f"method_grids '{name}': {useless} do not change {method}'s result; its "
                f"parameters are {methods_mod.get(method).params}"
            )
        shared = [
            k
            for k in clean
            if (params_mod.STAGE_OF[k] in ("data", "train", "locate") and k not in LAYER_CHOICE)
            or k in methods_mod.SHARED_KEYS
        ]
        if shared:
            raise SweepError(
                f"method_grids '{name}': {shared} change what every method shares (the split, "
                f"training, tracing, the edited errors or the statistics/held-out samples): "
                f"methods compared on different errors or held-out sets are not comparable; put "
                f"them in the common 'grid'"
            )
        out[method] = clean
    return out


def check_selection(sel: Mapping[str, Any]) -> dict:
    """A selection criterion may use validation-side columns only; Test is for reporting."""
    unknown = set(sel) - {"metric", "mode", "tie_breakers"}
    if unknown:
        raise SweepError(
            f"selection: unknown key(s) {sorted(unknown)} (metric, mode, tie_breakers)"
        )
    crit = [[sel["metric"], sel.get("mode", "max")]] + [
        list(t) for t in sel.get("tie_breakers", [])
    ]
    for metric, mode in crit:
        if str(metric).startswith("test") or metric not in SELECTION_METRICS:
            raise SweepError(
                f"selection metric {metric!r} is not allowed: a configuration is chosen on "
                f"validation-side metrics only ({', '.join(SELECTION_METRICS)}); Test metrics are "
                f"reported for the chosen configuration, never used to choose it"
            )
        if mode not in ("max", "min"):
            raise SweepError(f"selection mode for {metric!r} must be 'max' or 'min', got {mode!r}")
    return {"metric": crit[0][0], "mode": crit[0][1], "tie_breakers": crit[1:]}


def searched_params(spec: Mapping[str, Any]) -> list[str]:
    """The parameters a spec varies: grid keys with several values, and ``seed`` for several seeds."""
    method_grids = spec.get("method_grids") or {}
    grids = [
        spec.get("grid") or {},
        *(method_grids.values() if isinstance(method_grids, dict) else []),
    ]
    searched = list(dict.fromkeys(k for g in grids for k, v in g.items() if len(v) > 1))
    return searched + (["seed"] if len(spec.get("seeds") or []) > 1 else [])


def spec_from_args(args: argparse.Namespace) -> dict:
    """The spec with the command line's overrides (grid ranges, seeds, methods, fixed values), checked."""
    spec = load_spec(args.spec)
    grid = {} if args.trial else dict(spec.get("grid") or {})
    if spec.get("datasets") is not None:
        spec = restrict_datasets(spec, args)
    ranges = {
        "dataset": None if spec.get("datasets") is not None else args.datasets,
        "projection_samples": args.projection_samples_range,
        "nullspace_threshold": args.nullspace_threshold_range,
        "num_edit_layers": args.num_edit_layers_range,
        "max_edits": args.max_edits_range,
    }
    for k, v in ranges.items():
        if v:
            grid[k] = list(v)
    if args.fixed_edit_layers:
        grid["edit_layers"] = [
            [int(x) for x in s.replace(",", " ").split()] for s in args.fixed_edit_layers
        ]
        grid.pop("num_edit_layers", None)
    for g in args.grid:
        k, v = (g.split("=", 1) + [""])[:2]
        try:
            vals = params_mod.load_yaml_text(v, f"--grid {k.strip()}") if v.strip() else None
        except params_mod.ParamError as e:
            raise SweepError(f"--grid expects KEY=[V1,V2,...], got {g!r}: {e}") from None
        if not isinstance(vals, list):
            raise SweepError(f"--grid expects KEY=[V1,V2,...], got {g!r}")
        grid[k.strip()] = vals
    spec["grid"] = grid
    if args.seeds:
        blocks.override_seeds(spec, args.seeds)
    if args.methods:
        spec["methods"] = args.methods
    baselines = getattr(args, "baselines", None)
    if baselines:
        spec["baselines"] = list(baselines)
    if args.no_baselines:
        spec["baselines"] = False
    if (args.methods or args.no_baselines or baselines) and spec.get("method_grids") != REGISTERED:
        # the left-out methods' grids go too
        run = set(as_list(spec.get("methods", edit_methods())))
        bl = spec.get("baselines", list(baseline_aliases()))
        run |= set() if bl is False or bl is None else set(as_list(bl))
        aliases = baseline_aliases()
        spec["method_grids"] = {
            k: v
            for k, v in (spec.get("method_grids") or {}).items()
            if k in run or aliases.get(k) in run
        }
    fixed = dict(spec.get("set") or {})
    for s in args.set:
        k, v = params_mod.parse_assignment(s)
        fixed[k] = v
    opts = {
        "baseline_epochs": args.baseline_epochs,
        "retrain_epochs": args.baseline_epochs,  # the original's option: both baselines
        "baseline_lr": args.baseline_lr,
        "max_samples": args.max_samples,
        "data_path": str(paths.resolve(args.data_path, Path.cwd())) if args.data_path else None,
        "checkpoint_dir": str(paths.resolve(args.checkpoint_dir, Path.cwd()))
        if args.checkpoint_dir
        else None,
    }
    fixed.update({k: v for k, v in opts.items() if v is not None})
    if args.no_progress:
        fixed["progress"] = False
    spec["set"] = fixed
    return check_spec(spec)
