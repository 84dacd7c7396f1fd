"""Glue for the study notebooks: parameters from papermill/the parameters cell, the run folder.

Usage in a notebook::

    # --- cell tagged "parameters": the few this notebook is about ---
    dataset = "retinamnist"
    seed = 42
    params_file = None  # the rest: the run folder's parameters, or this YAML file
    # --- (papermill's injected cell) ---
    from vitedit import nb

    run = nb.start("02_train", globals())  # the parameters above, checked against the schema

``nb.start`` reads what the kernel holds when it is first called: every plain name defined so far
is a parameter (an unknown one is an error naming its closest match). Run again in the same kernel
(JupyterLab), it reads the names it read then and the schema's keys, and still refuses a new name
that looks like a mistyped parameter.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import params as params_mod
from . import paths, runs, threads

# timm and medmnist import tqdm.auto, which in a kernel without ipywidgets warns "IProgress not
# found" with the virtualenv's absolute path in every report; our own bars never use tqdm.auto
# (vitedit.progress), so the message says nothing a reader can act on
warnings.filterwarnings("ignore", message="IProgress not found")

STAGES = (
    runs.NOTEBOOK_STAGES
)  # notebook -> the parameter stage whose keys it owns, in the study's order


@dataclass
class Run:
    stage: str
    dir: Path
    params: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)

    def begin(self) -> Run:
        """Create the folder, refuse parameters that contradict completed stages, record 'running'."""
        folder = runs.RunFolder(self.dir)
        runs.check_not_busy(self.dir)  # by hand beside a CLI run of the same folder: refused
        folder.check_compatible(self.params, self.stage)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "figures").mkdir(exist_ok=True)
        stored = folder.params or params_mod.defaults()
        owned = _owned_param_stages(self.stage)
        merged = {
            **stored,
            **{k: v for k, v in self.params.items() if params_mod.STAGE_OF[k] in owned},
        }
        folder.write_params(merged)
        st = folder.status()
        for later in runs.dependants(self.stage):  # what read this stage's results is now stale
            if later in st:
                folder.set_status(later, "stale", reason=f"{self.stage} was run again")
        folder.set_status(self.stage, "running")
        return self

    def figure(self, name: str) -> Path:
        return self.dir / "figures" / name

    def finish(self, **extra: Any) -> None:
        # the threads torch used: num_threads, when set, reached the kernel (vitedit.threads)
        extra.setdefault("torch_threads", threads.in_use())
        runs.RunFolder(self.dir).set_status(self.stage, "ok", **extra)
        print(f"{self.stage} done; outputs in the run folder {self.dir.name}/")


def _owned_param_stages(stage: str) -> set[str]:
    """Parameter stages this notebook determines: its own, those before it, and 'run'."""
    order = runs.NOTEBOOKS
    upto = order[: order.index(stage) + 1] if stage in order else order
    return {STAGES[s] for s in upto} | {"run"}


_IGNORE = {"In", "Out", "exit", "quit", "get_ipython"}
# kept in the kernel's namespace: the names nb.start read the first time it was called there
_FIRST = "_vitedit_parameter_names"


def _candidate(k: str, v: Any) -> bool:
    return not (k.startswith("_") or k in _IGNORE or callable(v) or type(v).__name__ == "module")


def collect(ns: Mapping[str, Any], before: set[str] | None = None) -> dict[str, Any]:
    """The parameters in a notebook's namespace: names defined after ``before`` was taken, or
    (``before`` None) every plain name at the first call in this namespace, then those names and
    the schema's keys at a later call (the notebook's own variables are not parameters)."""
    if before is not None:
        return {k: v for k, v in ns.items() if k not in before and _candidate(k, v)}
    first = ns.get(_FIRST)
    if first is None:
        first = {k for k, v in ns.items() if _candidate(k, v)}
        if isinstance(ns, dict):
            ns[_FIRST] = first
    known = set(params_mod.SCHEMA) | {PARAMS_FILE, "run_dir"}
    out = {}
    for k, v in ns.items():
        if not _candidate(k, v):
            continue
        if k in first or k in known:
            out[k] = v
        elif isinstance(v, str | int | float | bool | list | tuple | type(None)):
            close = difflib.get_close_matches(k, known, n=1, cutoff=0.8)
            if close:  # a parameter typed anew in the cell and run again
                raise params_mod.ParamError(
                    f"unknown parameter '{k}' in the notebook; did you mean '{close[0]}'?"
                )
    return out


# a notebook parameter outside the schema: YAML parameter file(s) read like the CLI's --params, so
# that papermill takes a whole file without warning about every key the notebook does not declare
PARAMS_FILE = "params_file"


def from_params_file(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with ``params_file`` (one path or a list; relative to the repository root) applied:
    a file's value is used for every key that the notebook's other parameters leave at the
    schema's default (papermill's ``-p`` values and edited cells win)."""
    given = dict(given)
    files = given.pop(PARAMS_FILE, None)
    if not files:
        return given
    defaults = params_mod.defaults()
    from_files = params_mod.resolve(
        *[paths.resolve(f) for f in ([files] if isinstance(files, str | Path) else files)]
    )
    explicit = {k: v for k, v in given.items() if k not in defaults or v != defaults[k]}
    keys = set(from_files) - set(explicit)
    return {**given, **{k: from_files[k] for k in keys if from_files[k] != defaults.get(k)}}


def start(stage: str, ns: Mapping[str, Any], before: set[str] | None = None) -> Run:
    """Validate this notebook's parameters (unknown keys are errors) and resolve its run folder.

    Parameters come from the schema's defaults, then the run folder's ``params.yaml`` (when the
    run exists), then this notebook's parameters cell and papermill's injection. Nothing is
    written here; :meth:`Run.begin` creates the folder once inputs are validated.
    """
    given = from_params_file(collect(ns, before))
    p = params_mod.resolve(given)
    run_dir = runs.resolve_run_dir(p)
    stored = runs.RunFolder(run_dir).params
    if (
        stored
    ):  # parameters this notebook does not declare come from the run (e.g. training's, in 03)
        p = params_mod.resolve(stored, given)
    p["run_dir"] = str(run_dir)
    threads.apply(p["num_threads"])  # a kernel started by hand in JupyterLab too
    return Run(stage, run_dir, p)


def show_warnings(warnings: list[str], none: str = "no warnings") -> None:
    """Warnings in words, in a red box at the top of a section of the rendered report."""
    # lazy: IPython is only there in a kernel; the library's other users never call this
    from IPython.display import HTML, display

    from .report import SECTION_CLASS, warnings_html

    if warnings:
        display(
            HTML(
                warnings_html(warnings).replace(
                    "class='warn'",
                    f"class='{SECTION_CLASS}' "
                    "style='border:2px solid #b00;background:#fee;padding:0.5em 1em'",
                )
            )
        )
    else:
        print(none)
