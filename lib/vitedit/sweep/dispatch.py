"""``vitedit-sweep exec JOB``: a job file run by its kind (what the executors start)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ..executors import PARENT_ENV
from ..runs import RunError, writer
from .jobs import execute_job

GRACE_SECONDS = 20.0  # after its sweep died: time to record the interruption before exiting


def die_with_parent(poll: float = 1.0, grace: float = GRACE_SECONDS) -> threading.Thread | None:
    """Stop this worker when the sweep that started it dies (``kill -9`` of ``vitedit-sweep``
    leaves no one to stop it): the main thread is interrupted, which records the running stage as
    failed and stops its kernel, as Ctrl-C does; after ``grace`` seconds the process exits anyway.
    A worker runs in its own process group (for ``--timeout``), so the sweep's group signal does
    not reach it."""
    if not os.environ.get(PARENT_ENV):  # run by hand (`vitedit-sweep exec` under nohup): no sweep
        return None
    parent = int(os.environ[PARENT_ENV])  # set by executors.run_job
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in a background job

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        print("error: the sweep that started this job died; stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes a blocked main thread
        time.sleep(grace)
        os._exit(1)

    t = threading.Thread(target=watch, name="die-with-parent", daemon=True)
    t.start()
    return t


def execute(job_file: str | Path) -> int:
    """A unit job (``"kind": "unit"``: several experiments in this process, the benchmark's fast
    path) or one prep's or experiment's notebooks, holding the folder's writer lock (a resumed
    sweep never writes beside a live worker)."""
    die_with_parent()
    job = json.loads(Path(job_file).read_text())
    if job["kind"] == "unit":
        from .inprocess import execute_unit  # lazy: torch and the editors, for units only

        return execute_unit(job_file)
    try:
        with writer(job["folder"], f"vitedit-sweep exec {job_file}"):
            return execute_job(job_file)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
