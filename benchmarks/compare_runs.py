"""Compare the figures of two run folders (before/after a change): every CSV, ``metrics.json`` and
``edits/*.json``, value by value, timings left out.

    .venv/bin/python benchmarks/compare_runs.py reports/runs/A reports/runs/B [--show 5]

A value is "identical" when it is equal as read (floats bit for bit, NaN equal to NaN); every
other difference is listed with its largest absolute and relative size. Columns and keys that
measure time (``*seconds*``, ``*time*``, ``duration*``) and paths are left out: they differ
between any two runs. Exit status 0 when everything compared is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

SKIP_WORDS = (
    "seconds",
    "time",
    "duration",
    "checkpoint",
    "sha256",
    "run_dir",
    "path",
    "html",
    "file",
)


def skipped(key: str) -> bool:
    return any(w in key.lower() for w in SKIP_WORDS)


def flat(obj, prefix=""):
    """Leaves of a JSON object as (dotted key, value)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and isinstance(obj[0], (dict, list)):
        for i, v in enumerate(obj):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def size(a, b) -> tuple[float, float]:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return math.nan, math.nan
    d = abs(a - b)
    return d, d / max(abs(a), abs(b), 1e-300)


def compare_json(fa: Path, fb: Path) -> list[tuple[str, object, object]]:
    a = dict(flat(json.loads(fa.read_text())))
    b = dict(flat(json.loads(fb.read_text())))
    out = []
    for k in sorted(set(a) | set(b)):
        if skipped(k.split(".")[-1]) or ".info." in f".{k}." and skipped(k):
            continue
        if not same(a.get(k, "<missing>"), b.get(k, "<missing>")):
            out.append((k, a.get(k, "<missing>"), b.get(k, "<missing>")))
    return out


def compare_csv(fa: Path, fb: Path) -> list[tuple[str, object, object]]:
    a, b = pd.read_csv(fa), pd.read_csv(fb)
    out = []
    if a.shape[0] != b.shape[0]:
        return [("rows", a.shape[0], b.shape[0])]
    for c in sorted(set(a.columns) | set(b.columns)):
        if skipped(c):
            continue
        if c not in a or c not in b:
            out.append(
                (c, "present" if c in a else "<missing>", "present" if c in b else "<missing>")
            )
            continue
        for i, (x, y) in enumerate(zip(a[c].tolist(), b[c].tolist())):
            if not same(x, y):
                out.append((f"{c}[{i}]", x, y))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--show", type=int, default=3, help="differences listed per file")
    args = ap.parse_args(argv)
    before, after = Path(args.before), Path(args.after)
    files = sorted(
        {p.relative_to(before) for p in before.rglob("*") if p.suffix in (".csv", ".json")}
        | {p.relative_to(after) for p in after.rglob("*") if p.suffix in (".csv", ".json")}
    )
    files = [
        f
        for f in files
        if f.parts[0] not in ("notebooks",)
        and f.name not in ("status.json", "plan.json", "job.json")
    ]
    differing = 0
    for rel in files:
        fa, fb = before / rel, after / rel
        if not fa.is_file() or not fb.is_file():
            print(f"{rel}: only in {'after' if fb.is_file() else 'before'}")
            differing += 1
            continue
        diffs = compare_json(fa, fb) if rel.suffix == ".json" else compare_csv(fa, fb)
        if not diffs:
            print(f"{rel}: identical")
            continue
        differing += 1
        sizes = [size(x, y) for _, x, y in diffs]
        abs_max = max((s[0] for s in sizes if not math.isnan(s[0])), default=math.nan)
        rel_max = max((s[1] for s in sizes if not math.isnan(s[1])), default=math.nan)
        print(
            f"{rel}: {len(diffs)} values differ (largest: {abs_max:.3g} absolute, {rel_max:.3g} relative)"
        )
        for k, x, y in diffs[: args.show]:
            print(f"    {k}: {x!r} -> {y!r}")
    print(f"{len(files)} files compared, {differing} with differences")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
