"""Warnings in words: a method's result that crosses a documented bound (``columns``' ``*_WARN``).

One function judges one method's record (its ``metrics.json`` row and, when it exists, its
``edits/<method>.json``); the notebook reports (banner at the top), the run index, the stage's
status and the sweep report all read :func:`run_alerts` / :func:`record_alerts`. Importable
without torch.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import methods
from .columns import (
    FIX_RATE_WARN,
    HELDOUT_REGRESSION_WARN,
    HELDOUT_WARN,
    PRESERVATION_BOUND,
    TEST_LOSS_WARN,
    UPDATE_NORM_WARN,
)


def why(name: str) -> str:
    """Why a method may lose accuracy on purpose (its registry note), in parentheses."""
    m = methods.REGISTRY.get(name)
    return f" ({m.loss_note})" if m is not None and m.loss_note else ""


def strength_knobs(name: str) -> str:
    """Which settings move a method's strength (its registered grid), for a method that did not
    act: the fix a reader can try, and what the sweep searches."""
    m = methods.REGISTRY.get(name)
    knobs = [k for k, v in (m.grid if m is not None else {}).items() if len(v) > 1]
    if not knobs:
        return ""
    one = len(knobs) == 1
    return (
        f"; {', '.join(knobs)} {'moves' if one else 'move'} it (the sweep's strength grid "
        f"searches {'it' if one else 'them'})"
    )


def _num(v: Any) -> float | None:
    """A finite float, or None (missing, None, NaN, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def val_delta_ci_high(m: Mapping[str, Any]) -> float | None:
    """Upper end of the 95 % normal interval of FT-Val's paired accuracy change, from its counts:
    n samples, w2c = fix rate x wrong before, c2w = regression rate x right before; the change per
    sample is +1, -1 or 0, so its variance is (w2c + c2w)/n - delta^2."""
    n, acc = _num(m.get("val_total")), _num(m.get("val_acc_before"))
    fix, reg = _num(m.get("val_fix_rate")), _num(m.get("val_regression_rate"))
    if not n or acc is None or fix is None or reg is None:
        return None
    w2c, c2w = fix * (1 - acc) * n, reg * acc * n
    delta = (w2c - c2w) / n
    var = max((w2c + c2w) / n - delta**2, 0.0)
    return delta + 1.96 * math.sqrt(var / n)


def update_ratios(edit_record: Mapping[str, Any] | None) -> dict[str, float]:
    """``||dW|| / ||W||`` per edited layer from an ``edits/<method>.json`` record."""
    out = {}
    for layer, li in ((edit_record or {}).get("layer_info") or {}).items():
        u, w = _num(li.get("update_norm")), _num(li.get("weight_norm"))
        if u is not None and w:
            out[layer] = u / w
    return out


def record_alerts(
    name: str, m: Mapping[str, Any], edit_record: Mapping[str, Any] | None = None
) -> list[str]:
    """The warnings of one method: ``m`` holds its metrics (``metrics.json`` names; any may be
    missing: a check whose figures are absent is skipped), ``edit_record`` its edit's record."""
    out = []
    pres = ((edit_record or {}).get("info") or {}).get("preservation") or {}
    if "preservation_exceeds_bound" not in m and pres:  # edited, not evaluated yet (04 before 06)
        m = {
            **m,
            "preservation_exceeds_bound": pres.get("exceeds_bound"),
            "preservation_insample": pres.get("insample_median_max"),
            "preservation_heldout": pres.get("heldout_median_max"),
        }
    fixed, total = _num(m.get("edit_num_fixed")), _num(m.get("edit_total_wrong"))
    fix = _num(m.get("edit_fix_ratio"))
    reg = _num(m.get("proj_regression_rate"))
    if reg is not None and reg > HELDOUT_REGRESSION_WARN:
        out.append(
            f"{name}: breaks {reg:.1%} of the held-out FT-Train samples it had right (bound "
            f"{HELDOUT_REGRESSION_WARN:.0%}); its fixes come with that collateral damage"
        )
    after, majority = _num(m.get("test_acc_after")), _num(m.get("test_majority_share"))
    before = _num(m.get("test_acc_before"))
    base_ok = before is None or majority is None or before > majority  # else the base model is
    if after is not None and majority is not None and after < majority and base_ok:
        out.append(
            f"{name}: Test accuracy after the edit ({after:.3f}) is below always answering the "
            f"largest class ({majority:.3f}): the edited model is destroyed"
        )
    hi, delta = _num(m.get("test_delta_ci_high")), _num(m.get("test_acc_delta"))
    if delta is not None and delta < -TEST_LOSS_WARN and (hi is None or hi < 0):
        p = _num(m.get("test_mcnemar_p"))
        out.append(
            f"{name}: Test accuracy falls by {-delta:.1%} ({m.get('test_acc_before', 0):.3f} -> "
            f"{after if after is not None else float('nan'):.3f}"
            + (f", 95% CI of the change up to {hi:+.3f}" if hi is not None else "")
            + (f", McNemar p = {p:.2g}" if p is not None else "")
            + ")"
            + why(name)
        )
    vd, val_hi = _num(m.get("val_acc_delta")), val_delta_ci_high(m)
    if vd is not None and vd < -TEST_LOSS_WARN and (val_hi is None or val_hi < 0):
        n_val = _num(m.get("val_total"))
        of = f" ({round(-vd * n_val)} of {int(n_val)} samples" if n_val else " ("
        ci = f", 95% CI of the change up to {val_hi:+.3f})" if val_hi is not None else ")"
        out.append(f"{name}: FT-Val accuracy falls by {-vd:.1%}{of}{ci}" + why(name))
    if fix is not None and fix < FIX_RATE_WARN:
        count = f" ({int(fixed)} of {int(total)})" if fixed is not None and total else ""
        out.append(
            f"{name}: fixes almost none of the errors it edited{count}; at this strength the "
            f"method does not act" + strength_knobs(name)
        )
    ratios = update_ratios(edit_record)
    if ratios:
        layer, worst = max(ratios.items(), key=lambda kv: kv[1])
        if worst > UPDATE_NORM_WARN:
            out.append(
                f"{name}: the update at {layer} is {worst:.3g}x the norm of the weights it "
                f"changes (bound {UPDATE_NORM_WARN:g}x): the edit rewrites the layer"
            )
    if m.get("preservation_exceeds_bound") is True:
        worst_p = max(
            (
                v
                for v in (_num(m.get(k)) for k in ("preservation_insample", "preservation_heldout"))
                if v is not None
            ),
            default=float("nan"),
        )
        out.append(
            f"{name}: the edit changes the outputs of the keys it was meant to preserve: median "
            f"||dW k|| / ||W k|| = {worst_p:.3g} at its worst layer, above the bound "
            f"{PRESERVATION_BOUND:g} (raise L2 or lower nullspace_threshold)"
        )
    base = name.split("[")[0]
    if _num(m.get("ed_rest_fix_rate")) is not None and base in methods.REGISTRY:
        if methods.get(base).reads_edit_discovery_rest:
            read = "at their labels" if methods.get(base).reads_anchor_labels else "as it decides"
            out.append(
                f"{name}: reads the Edit-Discovery samples it did not edit ({read}), so its "
                f"figures on them (fixes of the errors not edited, their stability) are not out "
                f"of sample; Test judges it"
            )
    n = _num(m.get("proj_n_heldout"))
    if n is not None and n < HELDOUT_WARN:
        out.append(
            f"{name}: only {int(n)} held-out FT-Train samples measure its regression; the "
            f"regression rate is coarse"
        )
    return out


def _read(f: Path) -> dict:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


# an edit notebook's summary (edit_summary.csv, head_edit_summary.csv) in metrics.json's names
EDIT_SUMMARY_NAMES = {
    "fix_rate": "edit_fix_ratio",
    "n_edits": "edit_total_wrong",
    "ft_heldout_regression_rate": "proj_regression_rate",
    "ft_heldout_n": "proj_n_heldout",
}


def _edit_rows(run_dir: Path) -> dict[str, dict]:
    """The edit notebooks' per-method summaries (fix rate and held-out regression of the edits
    just made), as metrics rows."""
    out = {}
    for f in ("edit_summary.csv", "head_edit_summary.csv"):
        if not (run_dir / f).is_file():
            continue
        with open(run_dir / f, newline="") as fh:
            for row in csv.DictReader(fh):
                m = {EDIT_SUMMARY_NAMES[k]: v for k, v in row.items() if k in EDIT_SUMMARY_NAMES}
                fix, n = _num(m.get("edit_fix_ratio")), _num(m.get("edit_total_wrong"))
                if fix is not None and n is not None:
                    m["edit_num_fixed"] = round(fix * n)
                out[row["method"]] = m
    return out


def run_alerts(
    run_dir: str | Path, names: list[str] | None = None, evaluated: bool = True
) -> dict[str, list[str]]:
    """Every method's warnings in a run folder (``metrics.json`` rows, and the edit records of
    methods not evaluated yet), for ``names`` only when given; methods without warnings omitted.
    ``evaluated=False``: the edit records only (an edit notebook just ran: the method's row of
    ``metrics.json``, if any, describes its previous edit)."""
    run_dir = Path(run_dir)
    metrics = (
        _read(run_dir / "metrics.json").get("methods", {}) if evaluated else _edit_rows(run_dir)
    )
    edits = {f.stem: _read(f) for f in sorted((run_dir / "edits").glob("*.json"))}
    out = {}
    for name in sorted(set(metrics) | set(edits)):
        if names is not None and name not in names:
            continue
        found = record_alerts(name, metrics.get(name, {}), edits.get(name))
        if found:
            out[name] = found
    return out


def flat(alerts: Mapping[str, list[str]]) -> list[str]:
    return [w for ws in alerts.values() for w in ws]


# the warnings' kinds from the most to the least serious (a phrase each warning of that kind holds)
SEVERITY = (
    "is destroyed",
    "Test accuracy falls",
    "held-out FT-Train samples it had right",
    "FT-Val accuracy falls",
    "keys it was meant to preserve",
    "rewrites the layer",
    "does not act",
    "coarse",
)


def severity(warning: str) -> int:
    """The rank of a warning's kind in :data:`SEVERITY` (0: the most serious)."""
    return next((i for i, s in enumerate(SEVERITY) if s in warning), len(SEVERITY))


def grouped(alerts: Mapping[str, list[str]]) -> list[str]:
    """One line per method: how many warnings, and the most serious in words (the console's
    summary; every warning is in the reports)."""
    out = []
    for name, ws in alerts.items():
        worst = min(ws, key=severity).removeprefix(f"{name}: ")
        more = f" (+{len(ws) - 1} more in the report)" if len(ws) > 1 else ""
        out.append(f"{name}: {worst}{more}")
    return out
