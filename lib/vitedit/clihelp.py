"""Every command-line option with a help text and its default shown (both CLIs).

An option named like a parameter takes its meaning and its default from the schema
(``params.SCHEMA``, the same text as ``params/base.yaml``), so the help never drifts from what a run
uses; other options keep their own text and get their argparse default appended.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from typing import Any

from . import params as params_mod
from . import runs

_TRAILING_VALUE = re.compile(r"\s*\(([\w.+-]+)\)\s*$")  # "(1e-2)": a stale hand-written default


def _shown(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list | tuple):
        return " ".join(map(str, v)) or "none"
    return str(v)


def document(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """Fill in help texts and defaults of ``parser``'s options (and its subcommands'), in place.

    ``defaults``: the value a run uses when the option is not given, by parameter name (the
    schema's defaults); an option's own argparse default is used where it has one."""
    defaults = params_mod.defaults() if defaults is None else defaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                document(sub, defaults)
            continue
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        if action.help == argparse.SUPPRESS:
            continue
        schema = params_mod.SCHEMA.get(action.dest)
        text = action.help or (schema.help if schema else "")
        if "default" in text.lower():
            action.help = text.replace("%", "%%") if "%" in text and "%%" not in text else text
            continue
        if isinstance(action, argparse._StoreConstAction | argparse._StoreTrueAction) and (
            action.const is True and action.default in (False, None)
        ):
            shown = "on" if schema and defaults.get(action.dest) is True else "off"
        elif isinstance(action, argparse._StoreFalseAction):
            shown = "on"
        elif action.default not in (None, [], argparse.SUPPRESS):
            shown = _shown(action.default)
        elif action.dest in defaults:
            shown = _shown(defaults[action.dest])
        else:
            shown = "none"
        text = _TRAILING_VALUE.sub("", text) if schema else text
        text = text.replace("%", "%%") if "%" in text and "%%" not in text else text
        action.help = f"{text} (default: {shown})" if text else f"(default: {shown})"


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Options (of ``parser`` and its subcommands) whose help is missing or shows no default."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"{name} {o}" for o in undocumented(sub)]
            continue
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if not action.help or "default" not in action.help.lower():
            out.append("/".join(action.option_strings))
    return out


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds (``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def seed(text: str) -> int:
    """An argparse type: a seed numpy and torch take (0 .. 2**32 - 1)."""
    try:
        return params_mod.validate({"seed": int(text)})["seed"]
    except (ValueError, params_mod.ParamError) as e:
        raise argparse.ArgumentTypeError(
            str(e) if "seed" in str(e) else f"{text!r} is not a seed"
        ) from None


def run_name(text: str) -> str:
    """An argparse type: a run folder's name (:func:`vitedit.runs.check_run_name`; an empty one
    would silently become a timestamped run)."""
    try:
        runs.check_run_name(text)
    except runs.RunError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--run-name ", "", 1)) from None
    return text
