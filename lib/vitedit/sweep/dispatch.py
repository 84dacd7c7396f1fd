"""``vitedit-sweep exec JOB``: a job file run by its kind (what the executors start)."""

from __future__ import annotations

import json
from pathlib import Path

from .jobs import execute_job


def execute(job_file: str | Path) -> int:
    """A unit job (``"kind": "unit"``: several experiments in this process, the benchmark's fast
    path) or one prep's or experiment's notebooks."""
    if json.loads(Path(job_file).read_text())["kind"] == "unit":
        from .inprocess import execute_unit  # lazy: torch and the editors, for units only

        return execute_unit(job_file)
    return execute_job(job_file)
