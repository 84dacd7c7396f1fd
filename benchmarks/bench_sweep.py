"""Wall time of a sweep and the per-experiment overhead of running notebooks through papermill.

    .venv/bin/vitedit-sweep run params/sweeps/retinamnist_edit.yaml --parallel 2   # the sweep measured
    .venv/bin/python benchmarks/bench_sweep.py reports/sweeps/retinamnist_edit

Prints each invocation of the sweep (sweep_log.json: wall seconds, experiments run / already done),
the shared stages' time, and per method the median of: the experiment's wall time as the sweep saw it
(job_seconds), papermill's share (wall minus every notebook cell: process and kernel start, notebook
I/O, HTML rendering), the notebooks' setup cells (imports, data and model loading) and the work.
Overhead beyond the work = job_seconds - work_seconds.
Floor (issue 6): overhead <= 15 s per experiment on 2 cores with cached training and statistics.
Measure it with --parallel 1: parallel workers on 2 cores slow each other's experiments down.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from vitedit import sweep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir")
    args = ap.parse_args()
    ctx = sweep.report_context(args.sweep_dir)
    pd.set_option("display.width", 200)
    if len(ctx["history"]):
        print("invocations:\n", ctx["history"].to_string(index=False))
    for t in sorted(Path(args.sweep_dir).glob("shared/*/timing.json")):
        tj = json.loads(t.read_text())
        per = ", ".join(
            f"{k} {v.get('papermill_seconds') or 0:.1f} s" for k, v in tj["notebooks"].items()
        )
        print(
            f"shared stages {t.parent.name}: {tj.get('wall_seconds', tj['job_seconds'])} s ({per})"
        )
    s = ctx["summary"]
    s = s[s.status == "ok"]
    print("median per method (seconds):\n", sweep.timing_table(s).round(2).to_string())
    beyond = s.job_seconds - s.work_seconds
    print(
        json.dumps(
            {
                "experiments": int(len(s)),
                "sum_job_seconds": round(float(s.job_seconds.sum()), 1),
                "median_overhead_beyond_work": round(float(beyond.median()), 2),
                "max_overhead_beyond_work": round(float(beyond.max()), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
