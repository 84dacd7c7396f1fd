"""``vitedit --seeds``: one complete run per seed under a parent folder, then the statistics
across seeds (``seeds_summary.csv`` and the parent's index)."""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

from . import execute, paths, report, runs
from . import params as params_mod


def run_seeds(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], int],
    resolve_params: Callable[[argparse.Namespace, dict | None], dict],
) -> int:
    """Every seed's run (``run``, the CLI's single run) under one parent folder, which this
    process holds (one writer); every seed's parameters and data are checked before it exists."""
    # lazy: comparison and paired import pandas and scipy (about 1 s on 2 cores), which
    # `vitedit --help` and refused parameters do not need
    from . import comparison, paired

    runs_dir = (
        paths.resolve(args.runs_dir, Path.cwd()) if args.runs_dir else paths.resolve(runs.RUNS_DIR)
    )
    try:  # every seed checked before the parent folder exists (the seeds themselves: argparse)
        for seed in args.seeds:
            one = copy.copy(args)
            one.seed = seed
            execute.preflight(resolve_params(one, None), log=lambda *a: None)
        parent = runs.new_run_dir(runs_dir, args.run_name or f"seeds_{runs.timestamp()}")
        with runs.writer(parent):
            codes = {}
            for seed in args.seeds:
                print(f"=== seed {seed} ===")
                one = copy.copy(args)
                one.seeds, one.seed, one.runs_dir = None, seed, str(parent)
                one.run_name, one.timestamp = f"seed-{seed}", False
                codes[seed] = run(one)
            tables = {
                s: comparison.load_metrics(parent / f"seed-{s}") for s, c in codes.items() if c == 0
            }
            agg = paired.aggregate_seeds(tables)
            agg.to_csv(parent / "seeds_summary.csv", index=False)
            report.write_seeds_index(parent, codes, paired.seeds_table(agg) if len(agg) else None)
            report.update_reports_index(parent)
    except (ValueError, params_mod.ParamError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {execute.disk_error(e, runs_dir)}", file=sys.stderr)
        return 1
    failed = [s for s, c in codes.items() if c != 0]
    print(
        f"seeds summary: {parent / 'seeds_summary.csv'}"
        + (f" (failed seeds: {failed})" if failed else "")
    )
    print(f"report: {parent / 'index.html'}")
    return 1 if failed else 0
