"""Parameter sweeps: a YAML grid over the notebooks' parameters, run as papermill experiments.

    vitedit-sweep run params/sweeps/retinamnist_edit.yaml --dry-run
    vitedit-sweep run params/sweeps/retinamnist_edit.yaml --parallel 2
    vitedit-sweep collect reports/sweeps/retinamnist_edit

A sweep folder (``reports/sweeps/<name>``) holds:

- ``shared/<prep>/``: the shared stages (01 split, 02 training, 03 tracing), one run folder per
  distinct (data, training, tracing) parameters; the checkpoint itself is content-addressed in
  ``checkpoint_dir`` and the editing statistics in ``<checkpoint_dir>/stats``, so other sweeps and
  runs reuse them too;
- ``runs/<dataset>/<experiment>/``: one run folder per experiment (one registered method or
  baseline with one configuration), named by its parameters and a hash of everything that
  determines its result. It starts from a copy of its shared stages' outputs and runs 04/05 + 06,
  or 07;
- ``param_search_summary_<dataset>.csv`` / ``param_search_details_<dataset>.json``, ``selection.csv``
  and ``index.html`` (notebook 08 rendered).

An experiment is done when every notebook it runs recorded ``ok``; a rerun skips done experiments
and redoes the rest. The configuration reported as chosen is selected on a validation criterion
(FT-Val and the edit/FT-Train levels, :data:`vitedit.columns.SELECTION_METRICS`), never on Test.

Modules, in dependency order: ``spec`` (the YAML spec, selection criteria) → ``plan`` (experiments
and shared stages, content hashes from the method registry) → ``collect`` (summary rows, selection)
→ ``wandb_log`` → ``jobs`` (one job in its own process) → ``run`` (the sweep through an executor)
→ ``report`` (notebook 08) → ``cli``.
"""

from ..budget import headline as budget_headline
from .cli import build_parser, main, spec_from_args, trial_argv
from .collect import PARAM_COLUMNS, collect, experiment_folders, select, summary_row
from .jobs import execute_job, job_blob, materialize, settle, write_job
from .plan import Experiment, Prep, expand, experiment_name, relevant_keys, select_slice
from .report import links_table, render_report, report_context, status_counts, timing_table
from .run import run_sweep
from .spec import SWEEPS_DIR, SweepError, check_selection, check_spec, load_spec, searched_params
from .wandb_log import wandb_payload

__all__ = [
    "PARAM_COLUMNS",
    "SWEEPS_DIR",
    "Experiment",
    "Prep",
    "SweepError",
    "build_parser",
    "check_selection",
    "check_spec",
    "collect",
    "execute_job",
    "expand",
    "experiment_folders",
    "experiment_name",
    "job_blob",
    "budget_headline",
    "links_table",
    "load_spec",
    "main",
    "materialize",
    "relevant_keys",
    "render_report",
    "report_context",
    "run_sweep",
    "searched_params",
    "select",
    "select_slice",
    "settle",
    "spec_from_args",
    "status_counts",
    "summary_row",
    "timing_table",
    "trial_argv",
    "wandb_payload",
    "write_job",
]
