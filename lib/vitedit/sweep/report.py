"""The sweep's report: notebook 08 rendered into ``<sweep>/index.html``, and the tables it shows."""

from __future__ import annotations

import html as h
import json
import os
import time
from pathlib import Path

import pandas as pd

from .. import budget, execute, paths, report
from .collect import collect, in_sample_rows, read_spec
from .spec import DEFAULT_SELECTION, check_selection, searched_params

REPORT_NOTEBOOK = "08_sweep_report"
BENCHMARK_NOTEBOOK = "09_benchmark_report"  # the cross-dataset page of a benchmark sweep
TIMING_COLUMNS = [
    "job_seconds",
    "papermill_overhead_seconds",
    "setup_cells_seconds",
    "work_seconds",
    "overhead_beyond_work_seconds",
]


def render_report(sweep_dir: str | Path, log=print, workers: int = 1) -> Path:
    """Execute notebook 08 (the sweep's summary) into the sweep folder; its HTML is ``index.html``.
    An in-process sweep's chosen points are rendered first, ``workers`` at a time. The phase's
    wall time goes into the sweep log's last entry (``report_seconds``, read by the provenance)."""
    sweep_dir = Path(sweep_dir)
    t0, problems = time.perf_counter(), []
    if read_spec(sweep_dir).get("in_process"):  # the chosen points' notebooks, for their pages
        from .inprocess import render_chosen  # lazy: torch and the editors, for this path only

        problems = render_chosen(sweep_dir, report_context(sweep_dir)["summary"], log, workers)
        if problems:  # a chosen point's notebooks failed: recorded so in the summary
            collect(sweep_dir)
    out_nb = sweep_dir / "notebooks" / f"{REPORT_NOTEBOOK}.ipynb"
    execute.papermill(execute.notebook_path(REPORT_NOTEBOOK), out_nb, {"sweep_dir": str(sweep_dir)})
    ctx = report_context(sweep_dir)
    page = report.render_html(
        out_nb, sweep_dir / "index.html", problems + sweep_warnings(ctx["summary"], ctx["chosen"])
    )
    log(f"sweep report: {page}")
    if read_spec(sweep_dir).get("datasets"):  # a benchmark: the cross-dataset page too
        BENCH = BENCHMARK_NOTEBOOK
        out_nb = sweep_dir / "notebooks" / f"{BENCH}.ipynb"
        execute.papermill(execute.notebook_path(BENCH), out_nb, {"sweep_dir": str(sweep_dir)})
        # its warnings are its first output (benchmark.report_warnings), not a second banner
        log(f"benchmark report: {report.render_html(out_nb, sweep_dir / 'benchmark.html')}")
    _log_report_seconds(sweep_dir, time.perf_counter() - t0)
    return page


def _log_report_seconds(sweep_dir: Path, seconds: float) -> None:
    log_file = sweep_dir / "sweep_log.json"
    history = json.loads(log_file.read_text()) if log_file.is_file() else []
    if history:  # the invocation that ran the sweep (a report rendered on its own has none)
        history[-1]["report_seconds"] = round(seconds, 1)
        paths.atomic_write_text(log_file, paths.json_text(history))


def report_context(sweep_dir: str | Path) -> dict:
    """What notebook 08 shows: the summary tables, the chosen configurations, the searched
    parameters and the selection criterion (all read from the sweep folder)."""
    sweep_dir = Path(sweep_dir)
    spec = read_spec(sweep_dir)
    tables = {
        f.stem.replace("param_search_summary_", ""): pd.read_csv(f)
        for f in sorted(sweep_dir.glob("param_search_summary_*.csv"))
    }
    summary = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
    sel_file = sweep_dir / "selection.csv"
    chosen = (
        pd.read_csv(sel_file)
        if sel_file.is_file() and sel_file.stat().st_size > 1
        else pd.DataFrame()
    )
    if len(summary):
        summary["report_link"] = [os.path.relpath(r, sweep_dir) for r in summary.report]
    budget_file = sweep_dir / "budget.csv"
    points = (
        pd.read_csv(budget_file, keep_default_na=False, na_values=[""])
        if budget_file.is_file() and budget_file.stat().st_size > 1
        else pd.DataFrame()
    )
    if len(points):
        points["config_id"] = points["config_id"].fillna("")
    log_file = sweep_dir / "sweep_log.json"
    history = (
        pd.DataFrame(json.loads(log_file.read_text())) if log_file.is_file() else pd.DataFrame()
    )
    return {
        "spec": spec,
        "summary": summary,
        "chosen": chosen,
        "budget_points": points,
        # the curves' points, like the starred ones (budget.csv), from the seeds that ran the grid
        "settings": budget.settings_table(in_sample_rows(spec, summary))
        if len(summary)
        else pd.DataFrame(),
        "searched": searched_params(spec),
        "history": history,
        "selection": check_selection(spec.get("selection") or DEFAULT_SELECTION),
        "shared": sorted(
            os.path.relpath(p, sweep_dir) for p in (sweep_dir / "shared").glob("*/index.html")
        ),
    }


def _warned(rows: pd.DataFrame) -> pd.DataFrame:
    if "warnings" not in rows:
        return rows.iloc[:0]
    return rows[rows["warnings"].fillna("").astype(str).str.len() > 0]


def sweep_warnings(summary: pd.DataFrame, chosen: pd.DataFrame) -> list[str]:
    """The sweep report's warnings in words: experiments that did not finish, and the warnings
    (:mod:`vitedit.alerts`) of the chosen configurations; how many grid points cross a bound (a
    strength grid is meant to reach past the operating point, so those are counted, not listed)."""
    if not len(summary):
        return []
    out = []
    bad = summary[summary.status.isin(["failed", "todo"])]
    if len(bad):
        out.append(f"{len(bad)} of {len(summary)} experiments did not finish: see the table below")
    picked = set()
    if len(chosen) and "config_id" in chosen:
        picked = set(chosen.config_id.astype(str))
        for _, r in _warned(summary[summary.config_id.astype(str).isin(picked)]).iterrows():
            out.append(f"chosen setting, seed {r['seed']}: {r['warnings']}")
    others = _warned(summary[~summary.config_id.astype(str).isin(picked)])
    if len(others):
        out.append(
            f"{len(others)} of {len(summary)} experiments cross a documented bound (column "
            f"'warnings' of param_search_summary_<dataset>.csv); none of them is a chosen setting"
        )
    return out


def status_counts(summary: pd.DataFrame) -> pd.DataFrame:
    """Experiments per (dataset, method, status)."""
    return (
        summary.groupby(["dataset", "method", "status"]).size().rename("experiments").reset_index()
    )


def timing_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per method over completed experiments: wall time, papermill's share, the
    notebooks' setup cells, the work, and the overhead beyond the work (wall minus work)."""
    ok = summary[summary.status == "ok"].assign(
        overhead_beyond_work_seconds=lambda d: d.job_seconds - d.work_seconds
    )
    return ok.groupby("method")[TIMING_COLUMNS].median()


def links_table(summary: pd.DataFrame) -> str:
    """HTML table: each experiment, its status and a link to its run report (relative links)."""
    rows = []
    for _, r in summary.iterrows():
        err = h.escape(str(r["error"])) if isinstance(r.get("error"), str) else ""
        rows.append(
            f'<tr><td><a href="{h.escape(r["report_link"])}">{h.escape(r["experiment"])}</a></td>'
            f"<td>{h.escape(r['method'])}</td><td>{h.escape(r['status'])}</td><td>{err}</td></tr>"
        )
    return (
        "<table><tr><th>experiment (run report)</th><th>method</th><th>status</th><th>error</th></tr>"
        + "".join(rows)
        + "</table>"
    )
