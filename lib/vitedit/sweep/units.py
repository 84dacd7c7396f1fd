"""How the benchmark's in-process experiments are grouped into jobs (:mod:`vitedit.sweep.inprocess`):
per (dataset, seed) shared stage folder and part (head edits, layer edits, each error selection's
baselines), costliest first, each in the order that reuses the cached states."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import paths
from .jobs import longest_first, unit_cost
from .keys import LAYER_CHOICE, SELECTION_KEYS
from .plan import Experiment

UNIT_FILE = "unit.json"  # an in-process job: its experiments' job files

UNIT_NOTEBOOKS = ("05_edit_head", "04_edit_alphaedit", "07_baselines")


def unit_order(e: Experiment) -> tuple:
    """Where an experiment runs in its unit: by notebook, then layer choice, then errors, then
    method and epochs."""
    nb = UNIT_NOTEBOOKS.index(e.notebooks[0]) if e.notebooks[0] in UNIT_NOTEBOOKS else 3
    pick = [
        json.dumps(e.params.get(k), default=str) for k in (*sorted(LAYER_CHOICE), *SELECTION_KEYS)
    ]
    # a fine-tune of more epochs continues from the state of the point of fewer (same errors)
    epochs = e.params.get("baseline_epochs") or 0
    return (nb, *pick, e.method, epochs, e.name)


# an experiment's expected cost in its unit, by its first notebook, relative to a head edit's
# (measured on BloodMNIST, seeds 42-43, 2026-12-03: ≈ 0.65 s a head point, ≈ 7 s a layer point,
# ≈ 30 s a baseline: a fine-tune, then every set through the whole network)
PART_WEIGHT = {"05_edit_head": 1, "04_edit_alphaedit": 10, "07_baselines": 50}


def unit_part(e: Experiment) -> str:
    """Which part of its (dataset, seed) unit an experiment runs in: the head edits, the layer
    edits, and the baselines of each error selection (a replay grid point of more epochs
    continues from the point of fewer epochs of the same errors: they stay in one process)."""
    nb = e.notebooks[0]
    if nb != "07_baselines":
        return nb
    pick = json.dumps([e.params.get(k) for k in SELECTION_KEYS], default=str)
    return f"{nb}_{hashlib.sha256(pick.encode()).hexdigest()[:8]}"


def unit_jobs(files: dict[str, Experiment], sweep_dir: Path) -> dict[str, list[str]]:
    """The experiments' job files grouped by shared stage folder (dataset x seed) and
    :func:`unit_part`: one unit job each (``<sweep>/units/<shared folder>/<part>/unit.json``, its
    ``job.log`` beside it), run in one process (:mod:`vitedit.sweep.inprocess`), in
    :func:`unit_order` (hidden states are kept for one block at a time, targets once per layers and
    errors). The costliest units first: with parts, 2 workers share 3 design seeds evenly (whole
    units left one worker idle for a third of the phase)."""
    groups: dict[tuple[Path, str], list[str]] = {}
    for f, e in files.items():
        groups.setdefault((e.prep.folder(sweep_dir), unit_part(e)), []).append(f)

    def cost(g) -> int:
        (folder, _), jobs = g
        return unit_cost(folder, len(jobs)) * PART_WEIGHT.get(files[jobs[0]].notebooks[0], 1)

    units = {}
    for (folder, part), jobs in longest_first(groups.items(), cost):
        jobs.sort(key=lambda f: unit_order(files[f]))
        unit = sweep_dir / "units" / folder.name / part / UNIT_FILE
        paths.atomic_write_text(unit, json.dumps({"kind": "unit", "jobs": jobs}, indent=2))
        units[str(unit)] = jobs
    return units
