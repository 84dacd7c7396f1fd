"""``vitedit-sweep``: run, collect, trial, index (and the internal ``exec`` of one job).

vitedit-sweep run params/sweeps/retinamnist_edit.yaml --parallel 2 [--dry-run]
vitedit-sweep collect reports/sweeps/retinamnist_edit
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .. import clihelp, datasets, executors, methods, paths, report
from .. import params as params_mod
from ..runs import RunFolder
from .collect import collect
from .dispatch import execute
from .fresh import planned, run_phases
from .plan import expand, select_slice
from .report import render_report
from .run import preflight
from .spec import SWEEPS_DIR, SweepError, as_list, edit_methods, load_spec, spec_from_args


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vitedit-sweep", description="Parameter sweeps over the study's notebooks."
    )
    # `exec` (one job, called by the executors) is left out of the listing
    sub = ap.add_subparsers(dest="command", required=True, metavar="{run,collect,trial,index}")
    r = sub.add_parser("run", help="run (or resume) a sweep")
    r.add_argument("spec", help="sweep spec YAML (params/sweeps/...)")
    r.add_argument(
        "--sweep-dir", help=f"sweep folder (default: {SWEEPS_DIR}/<spec name>); a rerun resumes it"
    )
    r.add_argument(
        "--dry-run", action="store_true", help="list the experiments and their folders, run nothing"
    )
    r.add_argument("--max-experiments", type=int, help="run at most this many experiments")
    r.add_argument(
        "--continue-from", type=int, default=0, help="skip the first N experiments of the list"
    )
    r.add_argument("--timeout", type=clihelp.seconds, default=7200, help="seconds per experiment")
    r.add_argument("--no-baselines", action="store_true", help="no baseline experiments")
    r.add_argument(
        "--baselines",
        nargs="+",
        choices=[m.alias for m in methods.REGISTRY.values() if m.alias],  # the registry's
        help="run only these baselines (overrides the spec)",
    )
    r.add_argument("--baseline-epochs", type=int, help="epochs of both baselines (default: spec)")
    r.add_argument("--baseline-lr", type=float, help="learning rate of baseline 2")
    r.add_argument("--parallel", type=int, default=1, help="parallel experiments (0 = one per GPU)")
    r.add_argument("--gpu", type=int, help="pin every experiment to this GPU")
    r.add_argument("--executor", choices=["local", "ray"], default="local", help="local or Ray")
    r.add_argument(
        "--ray-address", help="Ray cluster address ('auto', 'ray://host:port'); default: local Ray"
    )
    r.add_argument(
        "--gpus-per-experiment",
        type=float,
        default=None,
        help="Ray: GPUs per experiment (fractions allowed; default 1 if GPUs exist, else 0)",
    )
    r.add_argument("--cpus-per-experiment", type=float, default=1, help="Ray: CPUs per experiment")
    r.add_argument(
        "--methods", nargs="+", choices=edit_methods(), help="edit methods (default: the spec's)"
    )
    r.add_argument(
        "--datasets",
        nargs="+",
        help="grid over these datasets (a benchmark spec: run only these of its 'datasets')",
    )
    r.add_argument(
        "--download",
        action="store_true",
        help="benchmark spec: allow MedMNIST downloads, so that every dataset of its list runs "
        "(default: only the files found locally)",
    )
    r.add_argument(
        "--liver-dir",
        help="benchmark spec: folder holding the liver sets (imgs.npy, labs.npy); without it they "
        "are skipped",
    )
    r.add_argument(
        "--data-path", help="data file or folder (liver: folder with imgs.npy, labs.npy)"
    )
    r.add_argument("--projection-samples-range", nargs="+", help="grid: projection_samples")
    r.add_argument(
        "--nullspace-threshold-range", nargs="+", type=float, help="grid: nullspace_threshold"
    )
    r.add_argument("--num-edit-layers-range", nargs="+", type=int, help="grid: num_edit_layers")
    r.add_argument(
        "--fixed-edit-layers", nargs="+", help="grid: fixed layer sets, e.g. 9,10,11 1,2,3"
    )
    r.add_argument("--max-edits-range", nargs="+", type=int, help="grid: max_edits")
    r.add_argument("--max-samples", type=int, help="errors traced by 03 (fixed)")
    r.add_argument("--seeds", nargs="+", type=int, help="seeds (split, training, noise)")
    r.add_argument(
        "--grid", action="append", default=[], metavar="KEY=[V1,V2]", help="grid over any parameter"
    )
    r.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="fix any parameter"
    )
    r.add_argument(
        "--checkpoint-dir", help="folder of the fine-tuned checkpoints and statistics cache"
    )
    r.add_argument("--wandb", action="store_true", help="log every experiment to Weights & Biases")
    r.add_argument("--wandb-project", default="vit-model-editing", help="W&B project")
    r.add_argument("--wandb-entity", help="W&B entity (team or user)")
    r.add_argument("--wandb-tags", nargs="*", default=[], help="W&B tags")
    r.add_argument(
        "--no-report", action="store_true", help="skip rendering the sweep report (notebook 08)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar on the console")
    r.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)  # ignore the spec's grid
    c = sub.add_parser(
        "collect", help="rebuild the summary CSV/JSON (and report) from a sweep's run folders"
    )
    c.add_argument("sweep_dir", help="the sweep folder")
    c.add_argument("--no-report", action="store_true", help="skip rendering the sweep report")
    t = sub.add_parser(
        "trial",
        help="one configuration as a W&B sweep trial: the spec's parameters plus "
        "KEY=VALUE pairs (the spec's grid is ignored), logged to W&B",
    )
    t.add_argument("spec", help="sweep spec YAML naming one method and 'baselines: false'")
    t.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="the trial's values")
    t.add_argument("--sweep-dir", help=f"sweep folder (default: {SWEEPS_DIR}/<spec name>)")
    t.add_argument("--checkpoint-dir", help="folder of the fine-tuned checkpoints")
    t.add_argument("--data-path", help="data file or folder")
    t.add_argument(
        "--timeout", type=clihelp.seconds, default=7200, help="seconds for the experiment"
    )
    t.add_argument("--wandb-project", default="vit-model-editing", help="W&B project")
    t.add_argument("--wandb-entity", help="W&B entity (team or user)")
    e = sub.add_parser("exec")  # internal: one job of a sweep (the executors call it); no help line
    e.add_argument("job", help="the job file")
    i = sub.add_parser("index", help="rewrite reports/index.html (every run and sweep)")
    i.add_argument("--reports-dir", default="reports", help="the reports folder")
    clihelp.document(ap)
    return ap


def trial_argv(args: argparse.Namespace) -> list[str]:
    """``trial SPEC k=v ...`` as a ``run``: the spec without its grid, the trial's values fixed, W&B on.
    The spec must name one method and no baselines (one trial = one experiment = one W&B run)."""
    spec = load_spec(args.spec)
    if len(as_list(spec.get("methods", edit_methods()))) != 1 or spec.get(
        "baselines", True
    ) not in (
        False,
        [],
        None,
    ):
        raise SystemExit(
            "error: a W&B trial runs one experiment: the spec must list one method and 'baselines: false'"
        )
    argv = [
        "run",
        args.spec,
        "--timeout",
        str(args.timeout),
        "--no-report",
        "--no-progress",
        "--wandb",
        "--wandb-project",
        args.wandb_project,
    ]
    for a in args.assignments:
        argv += ["--set", a.removeprefix("--")]
    for opt in ("sweep_dir", "checkpoint_dir", "data_path", "wandb_entity"):
        if getattr(args, opt):
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return argv + ["--trial"]


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and threading_main():
        signal.signal(
            signal.SIGTERM, _terminate
        )  # a killed sweep takes its running jobs down with it
    if args.command == "exec":
        return execute(args.job)
    if args.command == "trial":
        try:
            argv = trial_argv(args)
        except params_mod.ParamError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return main(argv)
    if args.command == "index":
        print(report.write_reports_index(paths.resolve(args.reports_dir, Path.cwd())))
        return 0
    if args.command == "collect":
        try:
            tables = collect(paths.resolve(args.sweep_dir, Path.cwd()))
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for ds, t in tables.items():
            print(
                f"{ds}: {len(t)} experiments, {int((t.status == 'ok').sum())} ok -> "
                f"{Path(args.sweep_dir) / f'param_search_summary_{ds}.csv'}"
            )
        if not args.no_report:
            render_report(paths.resolve(args.sweep_dir, Path.cwd()))
        return 0
    try:
        spec = spec_from_args(args)
        exps = select_slice(expand(spec), args.continue_from, args.max_experiments)
        sweep_dir = (
            paths.resolve(args.sweep_dir, Path.cwd())
            if args.sweep_dir
            else paths.resolve(SWEEPS_DIR) / spec["name"]
        )
        if sweep_dir.exists() and not sweep_dir.is_dir():
            raise SweepError(
                f"--sweep-dir {sweep_dir} is a file, not a folder; give a sweep folder"
            )
        if not exps:
            raise SweepError("no experiments left after --continue-from/--max-experiments")
        preflight(exps)
        workers, gpus = executors.plan_workers(args.parallel, args.gpu)
    except (SweepError, params_mod.ParamError, datasets.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preps = {e.prep.id: e.prep for e in exps}
    print(
        f"sweep {spec['name']}: {len(exps)} experiments, {len(preps)} shared stage folder(s) -> {sweep_dir}"
    )
    if args.dry_run:
        for e in planned(spec, exps, sweep_dir):
            folder = e.folder(sweep_dir)
            state = RunFolder(folder).state(e.notebooks) if folder.is_dir() else "todo"
            print(f"{e.index:4d}  {e.method:18s} {state:6s} {os.path.relpath(folder, Path.cwd())}")
        for pr in preps.values():
            print(
                f"shared: {' + '.join(pr.notebooks)}  {os.path.relpath(pr.folder(sweep_dir), Path.cwd())}"
            )
        return 0
    wandb_cfg = (
        {"project": args.wandb_project, "entity": args.wandb_entity, "tags": args.wandb_tags}
        if args.wandb
        else None
    )
    if args.executor == "ray":
        g = args.gpus_per_experiment if args.gpus_per_experiment is not None else (1 if gpus else 0)
        ex = executors.RayExecutor(args.ray_address, g, args.cpus_per_experiment, args.timeout)
    else:
        ex = executors.LocalExecutor(workers, gpus, args.timeout)
    print(
        f"executor: {ex.name}"
        + (f", {workers} worker(s), GPUs {gpus or 'none'}" if ex.name == "local" else "")
    )
    try:
        counts = run_phases(spec, exps, sweep_dir, ex, wandb_cfg, progress=not args.no_progress)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: finished experiments are kept; rerun the same command to resume {sweep_dir}",
            file=sys.stderr,
        )
        return 130
    finally:
        ex.close()
    tables = collect(sweep_dir)
    for ds in tables:
        print(f"summary: {sweep_dir / f'param_search_summary_{ds}.csv'}")
    if not args.no_report:
        try:
            render_report(sweep_dir)  # one render at a time: thread variables are process-wide
        except Exception as e:  # the CSVs are written; a report failure is reported, not hidden
            print(f"error: the sweep report failed: {e}", file=sys.stderr)
            return 1
    if sweep_dir.parent == paths.resolve(SWEEPS_DIR):
        report.write_reports_index(paths.resolve("reports"))
    print(
        f"done in {counts['seconds']:.0f} s: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['skipped_done']} already done"
    )
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
