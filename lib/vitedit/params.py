"""The study's parameters: one schema, YAML files layered on top, strict validation.

Every notebook and the CLI resolve parameters through :func:`resolve`, so a mistyped
or unknown key is an error everywhere (papermill itself would only warn).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# the schema (a data table) lives in vitedit.schema; its names are read through this module
from .schema import RUN_SETTINGS, SCHEMA, STAGE_OF, Param  # noqa: F401


class ParamError(ValueError):
    """A parameter file or value is invalid; the message says which and how to fix it."""


def defaults() -> dict[str, Any]:
    return {name: p.default for name, p in SCHEMA.items()}


def _coerce(p: Param, value: Any) -> Any:
    if value is None:
        if p.optional:
            return None
        raise ParamError(
            f"parameter '{p.name}' may not be empty (null); give a value, e.g. {p.default!r}"
        )
    kind = p.kind
    if kind in ("int_list", "str_list"):
        return _coerce_list(p, value)
    if kind == "count":
        if value == "all":
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, str))
            or not str(value).strip().isdigit()
            or int(value) < 1
        ):
            raise ParamError(
                f"parameter '{p.name}' expects a positive integer or 'all', got {value!r}"
            )
        return int(value)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise TypeError
        if kind == "int" or (kind == "choice" and all(isinstance(c, int) for c in p.choices)):
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            value = int(value) if not isinstance(value, str) else int(value.strip())
        elif kind == "float":
            if isinstance(value, bool):
                raise TypeError
            value = float(value)  # also turns YAML's '1e-3' string into a number
        elif kind in ("str", "choice"):
            if not isinstance(value, str):
                raise TypeError
    except (TypeError, ValueError):
        raise ParamError(
            f"parameter '{p.name}' expects "
            f"{p.kind if p.kind != 'choice' else 'one of ' + str(list(p.choices))}, "
            f"got {value!r} ({type(value).__name__}); {p.help}"
        ) from None
    if kind == "float" and not math.isfinite(value):  # .inf, nan: an edit saves a NaN model
        raise ParamError(
            f"parameter '{p.name}' = {value!r} is not a finite number; give a finite value "
            f"(default {p.default!r}); {p.help}"
        )
    if p.choices and value not in p.choices:
        raise ParamError(f"parameter '{p.name}' = {value!r} is not one of {list(p.choices)}")
    if p.check is not None:
        problem = p.check(value)
        if problem:
            raise ParamError(f"parameter '{p.name}' = {value!r} {problem}")
    return value


def _coerce_list(p: Param, value: Any) -> list:
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if isinstance(items, (int, float)) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise ParamError(f"parameter '{p.name}' expects a list, got {value!r}; {p.help}")
    out = []
    for item in items:
        try:
            if p.kind == "int_list":
                if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                    raise TypeError
                out.append(int(item))
            else:
                if not isinstance(item, str):
                    raise TypeError
                out.append(item)
        except (TypeError, ValueError):
            raise ParamError(
                f"parameter '{p.name}' expects a list of {p.kind[:-5]}s, got {value!r}"
            ) from None
    if p.choices:
        bad = [i for i in out if i not in p.choices]
        if bad:
            raise ParamError(f"parameter '{p.name}': {bad} not among {list(p.choices)}")
    if not out and not p.optional:
        raise ParamError(f"parameter '{p.name}' may not be an empty list")
    if p.check is not None:
        problem = p.check(out)
        if problem:
            raise ParamError(f"parameter '{p.name}' = {out!r} {problem}")
    return out


def unknown_key_message(key: str, where: str = "") -> str:
    close = difflib.get_close_matches(key, SCHEMA.keys(), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    src = f" in {where}" if where else ""
    return (
        f"unknown parameter '{key}'{src}.{hint} Known parameters: {', '.join(sorted(SCHEMA))} "
        f"(see params/base.yaml)."
    )


def validate(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Check keys and types of a partial parameter mapping; return coerced values."""
    out = {}
    for key, value in values.items():
        if key not in SCHEMA:
            raise ParamError(unknown_key_message(key, where))
        out[key] = _coerce(SCHEMA[key], value)
    return out


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~5x faster
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    would keep the last one silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if (
            key_node.tag == "tag:yaml.org,2002:merge"
        ):  # `<<: *anchor` merges; explicit keys override
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a plain value, got {key!r}", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (given twice; keep one)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml_text(text: str, what: str) -> Any:
    """YAML text read safely (no Python tags, no duplicate keys); errors name ``what``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ParamError(f"{what} is not valid YAML: {e}") from None


def read_mapping(path: str | Path, what: str = "parameter file") -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping); errors name the file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device or a pipe)"
        raise ParamError(f"{what} {path} is {kind}; give a YAML file of key: value lines")
    if not path.is_file():
        raise ParamError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(
            f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason}; a UTF-16 or binary "
            "file?); save it as UTF-8 YAML"
        ) from None
    except OSError as e:
        raise ParamError(f"{what} {path} cannot be read ({e.strerror})") from None
    data = load_yaml_text(text, f"{what} {path}") or {}
    if not isinstance(data, dict):
        raise ParamError(
            f"{what} {path} must hold a mapping of key: value, got {type(data).__name__}"
        )
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    return validate(read_mapping(path), where=str(path))


def resolve(*layers: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Defaults, then each layer (a mapping or a YAML file) in order; all validated."""
    out = defaults()
    for layer in layers:
        if isinstance(layer, (str, Path)):
            out.update(load_yaml(layer))
        else:
            out.update(validate(layer))
    check_combination(out)
    return out


def check_combination(p: Mapping[str, Any]) -> None:
    """Parameters that are valid alone but contradict each other."""
    if p.get("rank_scope") == "region_max" and not p.get("trace_regions"):
        raise ParamError(
            "rank_scope: region_max ranks the layers by the token x layer trace: it needs "
            "trace_regions > 0 (e.g. 3)"
        )
    if p.get("edit_pair") is not None and p.get("edit_selection") != "pair":
        raise ParamError(
            f"edit_pair {p['edit_pair']} is given but edit_selection is "
            f"'{p.get('edit_selection')}'; set edit_selection: pair (or remove edit_pair)"
        )


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (numbers, bools, null)."""
    if "=" not in text:
        raise ParamError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    value = load_yaml_text(raw, f"--set {key}=...: the value {raw!r}") if raw.strip() else None
    return key, validate({key: value})[key]


def subset(params: Mapping[str, Any], stages: Iterable[str]) -> dict[str, Any]:
    stages = set(stages)
    return {k: params[k] for k in SCHEMA if SCHEMA[k].stage in stages}


def digest(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def dump_yaml(params: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(params), sort_keys=False)


def render_base_yaml() -> str:
    """The text of ``params/base.yaml``: every parameter, its default and meaning, by stage.

    Regenerate after changing the schema: ``python -m vitedit.params > params/base.yaml``.
    """
    lines = [
        "# Every parameter of the study with its default. Other files in params/ override a few keys;",
        "# papermill takes a file with -p params_file FILE, the CLI with --params (later files win).",
        "# Unknown keys are errors. Generated by `python -m vitedit.params`.",
        "# The editing methods' strengths (edit, head, baseline) are operating points chosen on FT-Val",
        "# by the committed sweep params/sweeps/retinamnist_edit.yaml (3 seeds): each method's best",
        "# fix rate within 5 % FT-Val regression, AlphaEdit's also within the preservation bound (see",
        "# lib/vitedit/params.py and README 'Operating points'). params/original.yaml is the original",
        "# system's configuration.",
        "",
    ]
    stage = None
    for p in SCHEMA.values():
        if p.stage != stage:
            stage = p.stage
            lines.append(f"# --- {stage} ---")
        value = yaml.safe_dump({p.name: p.default}, default_flow_style=True, width=1000).strip()[
            1:-1
        ]
        extra = f" (one of {list(p.choices)})" if p.choices else ""
        lines.append(f"{value}  # {p.help}{extra}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_base_yaml(), end="")
