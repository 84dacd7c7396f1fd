"""What a sweep result depends on: the parameters that determine each method's result (read from
the method registry), the run settings that never do, and the shared stages' key."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from .. import methods as methods_mod
from .. import params as params_mod

# parameters that do not change a result (where and how it runs); never part of a content hash
NON_SEMANTIC = set(params_mod.RUN_SETTINGS)
# locate parameters that only pick layers from the tracing result (the tracing is shared across them)
LAYER_CHOICE = {"edit_layers", "num_edit_layers", "no_astra_layers", "rank_kind", "rank_scope"}
# the parameters that choose the edited errors and statistics samples (stages.select_edits)
SELECTION_KEYS = ("edit_selection", "max_edits", "edit_pair", "projection_samples", "seed")

# parameters added after sweeps were run, with the value that reproduces the earlier behaviour: at
# that value they stay out of an experiment's content hash, so earlier results keep being reused
HASH_NEUTRAL = {
    "edit_selection": "first",
    "edit_pair": None,
    "trace_regions": 0,
    "augment_flips": True,
    "head_verify_backoff": "scale",
    "head_verify_holdout": 0.0,
}


def inactive_when() -> dict[str, tuple[str, Any]]:
    """Parameters without effect while another has a given value (declared by the methods in the
    registry): left out of the hash then, so that a grid over both plans each distinct edit once."""
    return {k: v for m in methods_mod.REGISTRY.values() for k, v in m.inactive_when.items()}


def content_key(p: Mapping[str, Any], keys: Iterable[str]) -> dict:
    """The values of ``keys`` that identify a result (hash-neutral defaults and parameters without
    effect left out)."""

    inactive = inactive_when()

    def idle(k: str) -> bool:
        other, value = inactive.get(k, (None, None))
        return other is not None and p.get(other) == value

    return {
        k: p[k] for k in keys if not (k in HASH_NEUTRAL and p[k] == HASH_NEUTRAL[k]) and not idle(k)
    }


def _semantic(
    p: Mapping[str, Any], stages: Iterable[str], extra: Iterable[str] = (), drop: Iterable[str] = ()
) -> dict:
    stages, extra, drop = set(stages), set(extra), set(drop)
    keys = [
        k
        for k in params_mod.SCHEMA
        if (params_mod.STAGE_OF[k] in stages or k in extra)
        and k not in NON_SEMANTIC
        and k not in drop
    ]
    return {k: p[k] for k in keys}


def relevant_keys(method: str) -> list[str]:
    """Parameters that determine ``method``'s result: data, training and evaluation, the shared edit
    parameters, the method's own (registry), and tracing's when it edits the traced layers."""
    return list(_relevant_keys(method, id(methods_mod.get(method))))


@functools.cache
def _relevant_keys(method: str, registered: int) -> tuple[str, ...]:
    # keyed by the registered object too: a method registered again (tests) is looked up afresh
    m = methods_mod.get(method)
    stages = ["data", "train", "evaluate"] + (["locate"] if m.uses_layers else [])
    return tuple(
        _semantic(params_mod.defaults(), stages, extra=(*methods_mod.SHARED_KEYS, *m.params))
    )


def prep_key(p: Mapping[str, Any]) -> dict:
    shared = _semantic(p, ["data", "train", "locate"], drop=LAYER_CHOICE)
    if p.get("edit_selection") == "second":  # tracing traces the errors that fold edits
        shared |= {"edit_selection": "second", "max_edits": p["max_edits"]}
    return content_key(shared, shared)
