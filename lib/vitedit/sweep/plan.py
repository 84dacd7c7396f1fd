"""The plan of a sweep: its experiments (one method or baseline x one configuration x one seed),
deduplicated by a hash of exactly the parameters each result depends on (read from the method
registry), and the shared stages (split, training, tracing) they start from."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import methods as methods_mod
from .. import params as params_mod
from .keys import (  # noqa: F401 (re-exported)
    LAYER_CHOICE,
    NON_SEMANTIC,
    content_key,
    prep_key,
    relevant_keys,
)
from .spec import SweepError, baseline_aliases, searched_params


@dataclass
class Prep:
    id: str
    name: str
    params: dict
    needs_locate: bool = False

    def folder(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / "shared" / self.name

    @property
    def notebooks(self) -> list[str]:
        return ["01_split", "02_train"] + (["03_locate"] if self.needs_locate else [])


@dataclass
class Experiment:
    index: int
    id: str
    config_id: str  # the same configuration at another seed shares it
    name: str
    method: str
    params: dict
    prep: Prep
    point: dict = field(default_factory=dict)
    # edit_selection: second (the cross-fit swap): the config_id of the same setting editing the
    # first errors, at whose choice (vitedit.evidence) this one runs and is reported
    crossfit_of: str = ""

    @property
    def dataset(self) -> str:
        return self.params["dataset"]

    @property
    def notebooks(self) -> list[str]:
        return methods_mod.get(self.method).notebooks

    def folder(self, sweep_dir: Path) -> Path:
        """``runs/<dataset>/<name>``, or the folder of the same experiment (same content hash and
        method, in its ``job.json``) planned under another name: a parameter added to the grid
        since renames the experiments whose result it does not change, and they are not redone."""
        base = Path(sweep_dir) / "runs" / self.dataset
        named = base / self.name
        if named.exists() or not base.is_dir():
            return named
        for f in sorted(base.glob(f"*_{self.id[:8]}")):
            try:
                job = json.loads((f / "job.json").read_text())
            except (OSError, ValueError):
                continue
            if job.get("id") == self.id and job.get("method") == self.method:
                return f
        return named


def fmt(v: Any) -> str:
    if isinstance(v, list):
        return "-".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def experiment_name(method: str, p: Mapping[str, Any], searched: Iterable[str], h: str) -> str:
    """``proj{N}_edit{M}_{top{K}|layers{a-b}|last3}_thresh{T}`` (the original's folder scheme) for the
    edit methods, ``edit{M}`` for the baselines; then other searched parameters, seed and hash."""
    m = methods_mod.get(method)
    keys = relevant_keys(method)
    parts = [method]
    shown = {"seed", "dataset", "max_edits"}
    if not m.is_baseline:
        parts.append(f"proj{p['projection_samples']}")
        shown.add("projection_samples")
    parts.append(f"edit{p['max_edits']}")
    if m.uses_layers:
        layers = (
            f"layers{fmt(p['edit_layers'])}"
            if p["edit_layers"]
            else "last3"
            if p["no_astra_layers"]
            else f"top{p['num_edit_layers']}"
        )
        parts.append(layers)
        shown |= {"edit_layers", "no_astra_layers", "num_edit_layers"}
    for k, label in m.name_keys.items():
        parts.append(f"{label}{fmt(p[k])}")
        shown.add(k)
    for k in searched:
        if k not in shown and (k in keys or k in NON_SEMANTIC):
            parts.append(f"{k}-{fmt(p[k])}")
    parts += [f"s{p['seed']}", h[:8]]
    return "_".join(parts).replace("/", "-").replace(" ", "")


def method_params(method: str, p: Mapping[str, Any]) -> dict:
    """The full parameters of one experiment: only ``method`` runs in its notebooks."""
    return {**p, "methods": [method]}


def check_layers(p: Mapping[str, Any], point: Mapping[str, Any]) -> None:
    """The tracing choices fit the model's depth (``model`` and ``trace_*`` may be searched)."""
    # lazy: locate and models import torch and timm (about 5 s); the sweep's planning and its
    # jobs' processes read the plan without them unless a grid point is checked
    from .. import locate, models

    try:
        locate.check_choices(
            p["trace_kinds"], p["trace_scopes"], models.depth(p["model"]), p["edit_layers"] or []
        )
    except Exception as e:
        raise SweepError(f"grid point {dict(point)}: {e}") from None


def expand(spec: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> list[Experiment]:
    """Every experiment of the (checked) spec, deduplicated by content hash, in a stable order:
    for each grid point (and seed), its edit methods, then its baselines."""
    out: dict[str, Experiment] = {}
    preps: dict[str, Prep] = {}
    blocks = list(spec["datasets"]) if spec.get("datasets") else [None]
    for ds in blocks:  # a benchmark: one block per dataset, with its own seeds and fixed values
        block = (spec.get("per_dataset") or {}).get(ds) or {}
        layer = {} if ds is None else {"dataset": ds, **(block.get("set") or {})}
        files = list(
            block.get("params") or []
        )  # the dataset's recipe, then the spec's fixed values
        base_layers = [*spec["params"], *files, spec["set"], layer, dict(overrides or {})]
        seeds = block.get("seeds") or spec["seeds"]
        _expand_block(spec, base_layers, seeds, out, preps)
    return list(out.values())


def _expand_block(spec, base_layers: list, seeds, out: dict, preps: dict) -> None:
    # parameter files read once per block, not once per experiment (a benchmark plans thousands)
    base_layers = [
        params_mod.load_yaml(x) if isinstance(x, (str, Path)) else x for x in base_layers
    ]
    base = params_mod.resolve(*base_layers)
    grid = dict(spec["grid"])
    seeds = seeds or [base["seed"]]
    searched = searched_params(spec)
    aliases = baseline_aliases()
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        for seed in seeds:
            p = params_mod.resolve(*base_layers, point, {"seed": seed})
            check_layers(p, point)
            check_crossfit(p, grid)
            pk = prep_key(p)
            pid = params_mod.digest(pk, 12)
            prep = preps.setdefault(
                pid, Prep(pid, f"{p['dataset']}_{p['model']}_s{p['seed']}_{pid[:8]}", dict(p))
            )
            for method in [*spec["methods"], *(aliases[b] for b in spec["baselines"])]:
                mgrid = (spec.get("method_grids") or {}).get(method, {})
                for mvalues in itertools.product(*mgrid.values()):
                    mpoint = dict(zip(mgrid, mvalues))
                    q = params_mod.resolve(*base_layers, point, mpoint, {"seed": seed})
                    if mpoint:
                        check_layers(q, {**point, **mpoint})
                    _add(out, method, q, {**point, **mpoint, "seed": seed}, prep, grid, searched)


def ids(method: str, p: Mapping[str, Any], grid: Iterable[str] = ()) -> tuple[str, str]:
    """An experiment's id (what its result depends on) and its config_id (the same without the
    seed): hashes of exactly the parameters the registry says ``method``'s result depends on."""
    key = content_key(p, relevant_keys(method))
    key.update({k: p[k] for k in grid if k in NON_SEMANTIC})  # searched run settings count too
    eid = params_mod.digest({"method": method, **key}, 12)
    cid = params_mod.digest({"method": method, **{k: v for k, v in key.items() if k != "seed"}}, 12)
    return eid, cid


def _add(out: dict, method: str, p: dict, point: dict, prep: Prep, grid, searched) -> None:
    """Add one experiment unless an identical one (same content hash) is planned."""
    eid, cid = ids(method, p, grid)
    if eid in out:
        return
    twin = ids(method, {**p, "edit_selection": "first"}, grid)[1]
    if methods_mod.get(method).uses_layers:
        prep.needs_locate = True
    out[eid] = Experiment(
        index=len(out),
        id=eid,
        config_id=cid,
        name=experiment_name(method, p, searched, eid),
        method=method,
        params=method_params(method, p),
        prep=prep,
        point=point,
        crossfit_of=twin if p.get("edit_selection") == "second" else "",
    )


def check_crossfit(p: Mapping[str, Any], grid: Mapping[str, Any]) -> None:
    """With the cross-fit swap in the grid, tracing sees only each fold's own errors: ``max_samples``
    (errors traced) at most ``max_edits`` (one fold)."""
    if "second" not in (grid.get("edit_selection") or []):
        return
    if p["max_samples"] is None or p["max_samples"] > p["max_edits"]:
        raise SweepError(
            f"edit_selection 'second' is in the grid but max_samples is {p['max_samples']} with "
            f"max_edits {p['max_edits']}: tracing would see the other fold's errors; set "
            f"max_samples to at most max_edits (--set max_samples={p['max_edits']})"
        )


def select_slice(
    exps: Sequence[Experiment], continue_from: int = 0, max_experiments: int | None = None
):
    """``--continue-from N`` skips the first N experiments; ``--max-experiments M`` keeps M of the rest."""
    if continue_from < 0 or (max_experiments is not None and max_experiments < 1):
        raise SweepError("--continue-from must be >= 0 and --max-experiments >= 1")
    rest = list(exps)[continue_from:]
    return rest[:max_experiments] if max_experiments else rest
