"""Run folders: one folder per run holds its resolved parameters, split, CSVs, figures,
executed notebooks and HTML. Nothing is written to a shared fixed filename."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from . import params as params_mod
from . import paths

PARAMS_FILE = "params.yaml"
STATUS_FILE = "status.json"
JOB_FILE = "job.json"  # a sweep job's description (what it runs in this folder)
# the stages the current CLI invocation runs (the run index shows those not started as waiting)
PLAN_FILE = "plan.json"
RUNS_DIR = "reports/runs"
# one writer per run folder: the lock, and who holds it (pid, command, since when)
WRITER_LOCK = ".writer.lock"
WRITER_FILE = ".writer.json"
# set while this process holds a folder's lock: the kernels it starts write there as its agents
WRITER_ENV = "VITEDIT_WRITER"
# the study's notebooks in order -> the parameter stage each one owns
NOTEBOOK_STAGES = {
    "01_split": "data",
    "02_train": "train",
    "03_locate": "locate",
    "04_edit_alphaedit": "edit",
    "05_edit_head": "head",
    "06_evaluate": "evaluate",
    "07_baselines": "baseline",
}
NOTEBOOKS = list(NOTEBOOK_STAGES)
# what each notebook reads from earlier ones (05 and 07 share 04's errors, not its edits)
NEEDS = {
    "02_train": ["01_split"],
    "03_locate": ["02_train"],
    "04_edit_alphaedit": ["03_locate"],
    "05_edit_head": ["03_locate"],
    "06_evaluate": ["04_edit_alphaedit", "05_edit_head"],
    "07_baselines": ["03_locate"],
}


def prerequisites(stage: str) -> list[str]:
    """The notebooks ``stage`` needs, directly or not, in the study's order."""
    out: set[str] = set()
    frontier = set(NEEDS.get(stage, []))
    while frontier:
        out |= frontier
        frontier = {m for n in frontier for m in NEEDS.get(n, [])} - out
    return [n for n in NOTEBOOKS if n in out]


def dependants(stage: str) -> list[str]:
    """The notebooks whose results depend on ``stage``'s, directly or not, in the study's order."""
    out: set[str] = set()
    frontier = {stage}
    while frontier:
        frontier = {n for n, needs in NEEDS.items() if frontier & set(needs)} - out
        out |= frontier
    return [n for n in NOTEBOOKS if n in out]


class RunError(ValueError):
    pass


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


MAX_NAME = 100  # characters of a run name: a file system allows 255 bytes, with room for suffixes


def check_run_name(name: str) -> None:
    """A run name is a plain folder name: no path separator, not hidden, no control characters
    (a newline would make a folder no shell lists cleanly), at most :data:`MAX_NAME` characters."""
    bad = (
        "/" in name
        or "\\" in name
        or name.startswith(".")
        or not name.strip()
        or any(not c.isprintable() for c in name)
    )
    if bad:
        raise RunError(
            f"--run-name {name!r} must be a plain folder name (no '/', no leading '.', no "
            "newline or other control character)"
        )
    if len(name) > MAX_NAME:
        raise RunError(
            f"--run-name is {len(name)} characters long; use at most {MAX_NAME} (a folder name "
            "that long fails on most file systems)"
        )


def new_run_dir(
    runs_dir: str | Path = RUNS_DIR,
    run_name: str | None = None,
    dataset: str = "",
    add_timestamp: bool = False,
) -> Path:
    """``<runs>/<run_name>`` (optionally ``_<timestamp>``), or ``<runs>/<timestamp>_<dataset>``."""
    root = paths.resolve(runs_dir)
    if root.exists() and not root.is_dir():
        raise RunError(
            f"--runs-dir {root} is a file, not a folder; give a folder for the run folders"
        )
    if run_name:
        check_run_name(run_name)
        name = f"{run_name}_{timestamp()}" if add_timestamp else run_name
    else:
        name = f"{timestamp()}_{dataset}"
    path = root / name
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a run folder; choose another --run-name")
    k = 1
    while not run_name and path.exists():  # two runs started in the same second
        k += 1
        path = root / f"{name}-{k}"
    return path


def holder(run_dir: Path) -> str:
    """Who writes ``run_dir`` now, in words (from its ``.writer.json``)."""
    blob, _ = read_object(Path(run_dir) / WRITER_FILE)
    if not blob:
        return "another process"
    return f"process {blob.get('pid')} ({blob.get('command')!r}, since {blob.get('since')})"


@contextmanager
def writer(run_dir: str | Path, what: str | None = None) -> Iterator[Path]:
    """Hold ``run_dir``'s writer lock while the block runs: one writer per run folder. A second
    process is refused at once with a :class:`RunError` naming the holder (two CLI runs with the
    same ``--run-name``, a sweep resumed while an orphaned worker still writes). Portable
    (``filelock``); the lock dies with its process, so a killed run never leaves it held."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _acquire(folder, "wait for it to end (or stop it), or choose another --run-name")
    command = what or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    who = {"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    before = os.environ.get(WRITER_ENV)
    try:
        paths.atomic_write_text(folder / WRITER_FILE, json.dumps(who))
        os.environ[WRITER_ENV] = str(folder.resolve())
        yield folder
    finally:
        if before is None:
            os.environ.pop(WRITER_ENV, None)
        else:
            os.environ[WRITER_ENV] = before
        (folder / WRITER_FILE).unlink(missing_ok=True)
        lock.release()


def check_not_busy(run_dir: str | Path) -> None:
    """Refuse to write ``run_dir`` while another process holds its writer lock (a notebook run by
    hand beside a CLI run of the same folder); a kernel started by the holder is its agent."""
    folder = Path(run_dir)
    if not (folder / WRITER_LOCK).is_file() or os.environ.get(WRITER_ENV) == str(folder.resolve()):
        return
    _acquire(folder, "wait for it to end, or give this notebook another run_dir").release()


def _acquire(folder: Path, fix: str) -> filelock.BaseFileLock:
    """``folder``'s writer lock, taken at once, or a :class:`RunError` naming its holder."""
    lock = filelock.FileLock(folder / WRITER_LOCK)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RunError(f"run folder {folder} is being written by {holder(folder)}; {fix}") from None
    return lock


def claim_run_dir(path: Path) -> Path:
    """Create a generated run folder (a timestamp: two runs started in the same second pick the
    same name); the first free one of ``path``, ``path-2``, ... is made and returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        candidate = path if k == 1 else path.with_name(f"{path.name}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1


def default_run_dir(p: Mapping[str, Any]) -> Path:
    """Folder for interactive runs (no run_dir given): named by the data parameters (the split),
    so that notebooks 01, 02, 03 ... run one after another share it."""
    key = params_mod.digest(params_mod.subset(p, ["data"]), 8)
    return paths.resolve(RUNS_DIR) / f"interactive_{p['dataset']}_{key}"


def resolve_run_dir(p: Mapping[str, Any]) -> Path:
    return paths.resolve(p["run_dir"]) if p.get("run_dir") else default_run_dir(p)


def stored_params(run_dir: Path) -> dict[str, Any] | None:
    f = Path(run_dir) / PARAMS_FILE
    return params_mod.load_yaml_text(f.read_text(), str(f)) if f.is_file() else None


def status(run_dir: Path) -> dict[str, dict]:
    """The run's recorded stages; a corrupt ``status.json`` reads as one failure saying so (a
    sweep then redoes the run: its job clears the entry and runs every stage again)."""
    f = Path(run_dir) / STATUS_FILE
    if not f.is_file():
        return {}
    blob, problem = read_object(f)
    if problem:
        return {"sweep": {"status": "failed", "error": f"{problem}; rerun to redo this run"}}
    return blob


def read_object(f: Path) -> tuple[dict | None, str | None]:
    """The JSON object in ``f``, or None and why it cannot be read (corrupt, not an object)."""
    try:
        blob = json.loads(Path(f).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{Path(f).name} is corrupt ({type(e).__name__}: {str(e)[:80]})"
    if not isinstance(blob, dict):
        return None, f"{Path(f).name} is corrupt (not a JSON object)"
    return blob, None


def unreadable(f: Path) -> str | None:
    """Why the JSON object file ``f`` cannot be read (None when it can)."""
    return read_object(f)[1]


def corrupt_outputs(run_dir: Path) -> list[str]:
    """The run's JSON outputs that cannot be read (metrics, timing, edit records)."""
    folder = Path(run_dir)
    files = [folder / "metrics.json", folder / "timing.json", *sorted(folder.glob("edits/*.json"))]
    return [p for p in (unreadable(f) for f in files if f.is_file()) if p]


def check_compatible(run_dir: Path, p: Mapping[str, Any], stage_keys: Mapping[str, str]) -> None:
    """Refuse parameters that contradict what completed stages of this run were made with.

    ``stage_keys`` maps a completed notebook stage to the parameter stage it owns
    (e.g. ``{"01_split": "data"}``); keys of those stages must not change.
    """
    old = stored_params(run_dir)
    if not old:
        return
    done = {s for s, st in status(run_dir).items() if st.get("status") == "ok"}
    frozen = {stage_keys[s] for s in done if s in stage_keys}
    diffs = [
        f"{k}: {old.get(k)!r} -> {p.get(k)!r}"
        for k, spec in params_mod.SCHEMA.items()
        if spec.stage in frozen
        and k not in params_mod.RUN_SETTINGS
        and k in old
        and old.get(k) != p.get(k)
    ]
    if diffs:
        raise RunError(
            f"run folder {run_dir} already holds completed stages made with other parameters "
            f"({'; '.join(diffs)}). Use a new --run-name (or no run name for a timestamped run)."
        )


def write_params(run_dir: Path, p: Mapping[str, Any]) -> None:
    d = dict(p)
    d["run_dir"] = str(run_dir)
    paths.atomic_write_text(Path(run_dir) / PARAMS_FILE, params_mod.dump_yaml(d))


def set_status(run_dir: Path, stage: str, state: str, **extra: Any) -> None:
    """Record a stage's state (running / ok / failed / skipped); only 'ok' means success."""
    # a corrupt status.json is replaced: its stages read as not done and run again
    st = read_object(Path(run_dir) / STATUS_FILE)[0] or {}
    entry = {"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    st[stage] = entry
    f = Path(run_dir) / STATUS_FILE
    text = paths.json_text(st)
    try:
        paths.atomic_write_text(f, text)
    except OSError:
        if state == "ok" or not f.is_file():
            raise
        # a full disk: the failure still replaces what the file said (never a stale 'ok'), in
        # place and compact (shorter than the file it overwrites, so it needs no new space)
        paths.overwrite_in_place(
            f, paths.json_text(st, indent=None, separators=(",", ":")).encode()
        )


def clear_status(run_dir: Path, stage: str) -> None:
    """Forget a stage's entry (e.g. a sweep's recorded failure before the job is run again)."""
    st = read_object(Path(run_dir) / STATUS_FILE)[0] or {}
    if stage in st:
        del st[stage]
        paths.atomic_write_text(Path(run_dir) / STATUS_FILE, paths.json_text(st))


class RunFolder:
    """One run folder's recorded state: parameters, and each stage's status (``status.json``).

    Every question about a folder's state (is a stage done, did anything fail, which error came
    first) is answered here, for the CLI, the notebooks, the sweep and the reports alike.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def params(self) -> dict[str, Any] | None:
        return stored_params(self.path)

    def status(self) -> dict[str, dict]:
        return status(self.path)

    def stage(self, name: str) -> dict:
        return self.status().get(name, {})

    def is_ok(self, name: str) -> bool:
        return self.stage(name).get("status") == "ok"

    def all_ok(self, notebooks: Sequence[str]) -> bool:
        st = self.status()
        return all(st.get(n, {}).get("status") == "ok" for n in notebooks)

    def not_ok(self, notebooks: Sequence[str]) -> list[str]:
        st = self.status()
        return [n for n in notebooks if st.get(n, {}).get("status") != "ok"]

    def has_failure(self) -> bool:
        return any(v.get("status") == "failed" for v in self.status().values())

    def state(self, notebooks: Sequence[str]) -> str:
        """``ok`` (every notebook recorded ok), ``failed`` (a failure is recorded) or ``todo``."""
        if not self.status():
            return "todo"
        if self.all_ok(notebooks):
            return "ok"
        return "failed" if self.has_failure() else "todo"

    def first_error(self) -> str:
        for stage, v in self.status().items():
            if v.get("status") == "failed":
                return f"{stage}: {v.get('error')}"
        return "incomplete"

    def running(self) -> list[str]:
        return [s for s, v in self.status().items() if v.get("status") == "running"]

    def set_status(self, stage: str, state: str, **extra: Any) -> None:
        set_status(self.path, stage, state, **extra)

    def clear_status(self, stage: str) -> None:
        clear_status(self.path, stage)

    def write_params(self, p: Mapping[str, Any]) -> None:
        write_params(self.path, p)

    def check_compatible(self, p: Mapping[str, Any], stage: str | None = None) -> None:
        """Refuse ``p`` if it contradicts what completed stages (other than ``stage``) were made with."""
        check_compatible(self.path, p, {s: k for s, k in NOTEBOOK_STAGES.items() if s != stage})

    def plan(self) -> list[str]:
        """The stages the current invocation will run (``plan.json``; the run index shows those not
        started as waiting)."""
        f = self.path / PLAN_FILE
        return json.loads(f.read_text()) if f.is_file() else []

    def write_plan(self, stages: Sequence[str]) -> None:
        paths.atomic_write_text(self.path / PLAN_FILE, json.dumps(list(stages)))

    def job(self) -> dict | None:
        f = self.path / JOB_FILE
        return json.loads(f.read_text()) if f.is_file() else None


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """A sweep's experiment folders (``runs/<dataset>/<experiment>/`` holding a job file)."""
    return sorted(f.parent for f in (Path(sweep_dir) / "runs").glob(f"*/*/{JOB_FILE}"))
