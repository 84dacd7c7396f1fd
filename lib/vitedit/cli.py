"""Command-line entry point: runs the study's notebooks through papermill into a run folder.

    vitedit --stage full --dataset retinamnist            # 01_split + 02_train, timestamped run
    vitedit --stage train --run-name exp1 --epochs 10     # reuses exp1's split if it has one

Every option maps to a notebook parameter (``params/base.yaml`` lists them all); YAML files
given with ``--params`` are layered in order, then options, then ``--set key=value``.
Inputs are validated before anything is written; a failed notebook is recorded as failed
(its partial report is rendered) and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import clihelp, datasets, execute, methods, paths, report, runs, seeds, threads
from . import params as params_mod

NOTEBOOKS = runs.NOTEBOOKS  # the study's order
STAGE_NOTEBOOK = {
    "data": "01_split",
    "train": "02_train",
    "locate": "03_locate",
    "edit": None,
    "eval": "06_evaluate",
    "baseline1": "07_baselines",
    "baseline2": "07_baselines",
}
STAGES = [*STAGE_NOTEBOOK, "full"]
CLI_OWNED = ("run_dir",)  # parameters the CLI sets itself (from --runs-dir / --run-name)
# the original system's --stage names of the baselines (declared in the method registry)
BASELINE_OF = {m.cli_stage: m.name for m in methods.REGISTRY.values() if m.cli_stage}
# the original's flags that select one method (--closed-form: head_closed_form)
FLAG_OF = {m.cli_flag: m.name for m in methods.REGISTRY.values() if m.cli_flag}
# options that map 1:1 to parameters (option dest -> parameter)
OPTION_PARAMS = [
    "dataset",
    "size",
    "data_path",
    "ft_train_ratio",
    "seed",
    "model",
    "epochs",
    "batch_size",
    "lr",
    "checkpoint_dir",
    "device",
    "weights_path",
    "num_ablations",
    "max_samples",
    "edit_layers",
    "num_edit_layers",
    "max_edits",
    "edit_selection",
    "edit_pair",
    "projection_samples",
    "nullspace_threshold",
    "v_lr",
    "v_num_grad_steps",
    "L2",
    "head_lr",
    "head_steps",
    "ewc_lambda",
    "baseline_epochs",
    "baseline_lr",
]
FLAG_PARAMS = ["download", "resume", "pin_memory", "no_astra_layers"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vitedit",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--stage",
        choices=STAGES,
        default="full",
        help="data: 01_split; train: 02_train; locate: 03_locate; edit: the notebook of "
        "--edit-method ("
        + methods.by_notebook_text()
        + "); eval: 06; "
        + " / ".join(BASELINE_OF)
        + ": 07 with "
        + " / ".join(BASELINE_OF.values())
        + "; earlier notebooks not yet done in the run folder run first; full: every notebook",
    )
    ap.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="YAML",
        help="parameter file(s), later ones override earlier (default: params/base.yaml)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any parameter")
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", help=f"one of: {', '.join(datasets.known_datasets())}")
    g.add_argument("--size", type=int, help="MedMNIST image size (28, 64, 128, 224)")
    g.add_argument(
        "--data-path", help="data file or folder (liver: folder with imgs.npy, labs.npy)"
    )
    g.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="allow downloading a missing MedMNIST file",
    )
    g.add_argument(
        "--ft-train-ratio", type=float, help="share of official train used as FT-Train (0.9)"
    )
    g.add_argument("--seed", type=clihelp.seed, help="seed of the split and of training (42)")
    g = ap.add_argument_group("training")
    g.add_argument("--model", help="model config (vit_small_p4_28, vit_base_patch16_224, ...)")
    g.add_argument("--weights-path", help="local pretrained weights file")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument(
        "--resume", action="store_true", default=None, help="continue an interrupted training run"
    )
    g.add_argument(
        "--pin-memory",
        dest="pin_memory",
        action="store_true",
        default=None,
        help="pin host batches for CUDA copies (default: when CUDA is used)",
    )
    g.add_argument(
        "--no-pin-memory",
        dest="pin_memory",
        action="store_false",
        help="never pin host batches (default: pinned when CUDA is used)",
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g = ap.add_argument_group("layer localisation")
    g.add_argument("--num-ablations", type=int, help="noisy copies per traced sample (32)")
    g.add_argument("--max-samples", type=int, help="Edit-Discovery errors to trace (50)")
    g.add_argument(
        "--edit-layers", type=int, nargs="+", help="layers to edit, e.g. 9 10 11 (highest priority)"
    )
    g.add_argument("--num-edit-layers", type=int, help="top traced layers to edit (3)")
    g.add_argument(
        "--no-astra-layers",
        action="store_true",
        default=None,
        help="ignore the tracing result (edit the last three layers)",
    )
    g = ap.add_argument_group("editing")
    g.add_argument(
        "--edit-method",
        choices=methods.names(baselines=False),
        help="--stage edit: which registered method (default: every method of 04); "
        + "; ".join(f"{flag} selects {name}" for flag, name in FLAG_OF.items()),
    )
    for flag, name in FLAG_OF.items():
        g.add_argument(flag, action="store_true", help=f"the original's flag for {name}")
    g.add_argument("--max-edits", type=int, help="Edit-Discovery errors to edit (30)")
    g.add_argument(
        "--edit-selection",
        choices=("first", "second", "pair"),
        help="errors edited: first in set order, the next ones (second: the cross-fit swap), or "
        "one confusion pair together (first)",
    )
    g.add_argument(
        "--edit-pair",
        type=int,
        nargs=2,
        metavar=("TRUE", "PREDICTED"),
        help="class ids of the confusion pair for --edit-selection pair (the most frequent)",
    )
    g.add_argument(
        "--projection-samples", help="FT-Train samples for the editing statistics (500, or all)"
    )
    g.add_argument(
        "--nullspace-threshold", type=float, help="eigenvalue threshold of the null space (1e-2)"
    )
    g.add_argument("--v-lr", type=float, help="target-residual learning rate (0.1)")
    g.add_argument("--v-num-grad-steps", type=int, help="target-residual steps (25)")
    g.add_argument(
        "--L2", dest="L2", type=float, help="ridge term of the AlphaEdit/MEMIT solve (1e-4)"
    )
    g.add_argument("--head-lr", type=float, help="head editing learning rate (0.01)")
    g.add_argument("--head-steps", type=int, help="head editing steps (50)")
    g.add_argument("--ewc-lambda", type=float, help="EWC strength (1000)")
    g = ap.add_argument_group("baselines")
    g.add_argument(
        "--baseline-epochs",
        type=int,
        help="epochs of both baselines (default: retrain "
        "with the original model's epochs, fine-tune 10)",
    )
    g.add_argument("--baseline-lr", type=float, help="learning rate of baseline 2 (1e-5)")
    g = ap.add_argument_group("output")
    g.add_argument("--checkpoint-dir", help="folder of fine-tuned checkpoints (checkpoints)")
    g.add_argument("--runs-dir", default=None, help="folder of run folders (default: reports/runs)")
    g.add_argument(
        "--run-name",
        type=clihelp.run_name,
        help="name of the run folder (reused across stages); default: a timestamp",
    )
    g.add_argument("--timestamp", action="store_true", help="append a timestamp to --run-name")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--seeds",
        type=clihelp.seed,
        nargs="+",
        help="run the stage once per seed (split, training, noise) in <run>/seed-<s>/ and aggregate "
        "metrics.json to mean ± 95%% CI in <run>/seeds_summary.csv",
    )
    clihelp.document(ap)
    return ap


def resolve_params(args: argparse.Namespace, stored: dict | None = None) -> dict:
    """Parameters of this call: base (``--params`` files; else the run's stored parameters when
    the run folder exists; else ``params/base.yaml``), then the options, then ``--set``."""
    owned = [
        f"--set {s.split('=', 1)[0].strip()}"
        for s in args.set
        if s.split("=", 1)[0].strip() in CLI_OWNED
    ]
    if args.params:
        layers: list = [paths.resolve(f, Path.cwd()) for f in args.params]
        for f in layers:  # e.g. another run's params.yaml passed back: said, not silently dropped
            for k, v in params_mod.read_mapping(f).items():
                if k in CLI_OWNED and v is not None:
                    print(
                        f"note: {k} in {f} is ignored: the CLI sets it from --runs-dir and "
                        f"--run-name",
                        file=sys.stderr,
                    )
    elif stored:
        layers = [{k: v for k, v in stored.items() if k != "run_dir"}]
    else:
        layers = [paths.project_root() / "params" / "base.yaml"]
    opts = {k: getattr(args, k) for k in OPTION_PARAMS if getattr(args, k) is not None}
    if "baseline_epochs" in opts:  # the original's option: the epochs of both baselines
        opts["retrain_epochs"] = opts["baseline_epochs"]
    for k in (
        "data_path",
        "checkpoint_dir",
        "weights_path",
    ):  # options are relative to the caller's cwd
        if opts.get(k):
            opts[k] = str(paths.resolve(opts[k], Path.cwd()))
    for k in FLAG_PARAMS:
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    if args.no_progress:
        opts["progress"] = False
    if owned:
        raise params_mod.ParamError(
            f"run_dir is the CLI's to set ({', '.join(owned)}): use --runs-dir and "
            f"--run-name (a run folder is <runs-dir>/<run-name>)"
        )
    only = chosen_method(args)
    if only:  # that method alone in its notebook; the other notebooks keep their methods
        notebook = methods.get(only).notebook
        opts["methods"] = [
            m for m in methods.names() if methods.get(m).notebook != notebook or m == only
        ]
    layers.append(opts)
    layers.append(dict(params_mod.parse_assignment(s) for s in args.set))
    return {**params_mod.resolve(*layers), "run_dir": None}  # run() sets it from the run folder


def chosen_method(args: argparse.Namespace) -> str | None:
    """The one method a call asks for (``--edit-method``, a registered method's flag such as
    ``--closed-form``, ``--stage baseline1/2``). A flag applies to its own method's notebook."""
    for flag, name in FLAG_OF.items():
        if getattr(args, flag.lstrip("-").replace("-", "_")):
            given = args.edit_method
            if (
                given is not None
                and given != name
                and (methods.get(given).notebook != methods.get(name).notebook)
            ):
                raise params_mod.ParamError(
                    f"{flag} applies to the methods of {methods.get(name).notebook}, not {given}"
                )
            return name
    if args.stage in BASELINE_OF:
        return BASELINE_OF[args.stage]
    return args.edit_method


def notebooks_to_run(stage: str, folder: runs.RunFolder, method: str | None = None) -> list[str]:
    """``full``: every notebook; a stage: its notebook, after the notebooks it needs
    (:data:`vitedit.runs.NEEDS`, e.g. 05 and 07 need 01-03 only) that are not yet ``ok`` in the run."""
    if stage == "full":
        return list(NOTEBOOKS)
    target = STAGE_NOTEBOOK[stage] or (
        methods.get(method).notebook if method else methods.EDIT_NOTEBOOKS[0]
    )
    return folder.not_ok(runs.prerequisites(target)) + [target]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return seeds.run_seeds(args, run, resolve_params) if args.seeds else run(args)


def run(args: argparse.Namespace) -> int:
    """One run folder: the notebooks the stage needs, executed in order; exit code 0, 1 or 2."""
    run_dir = None
    try:
        runs_dir = paths.resolve(args.runs_dir, Path.cwd()) if args.runs_dir else runs.RUNS_DIR
        existing = None  # a named run's folder: its stored parameters come first
        if args.run_name and not args.timestamp:
            existing = runs.new_run_dir(runs_dir, args.run_name)
        p = resolve_params(args, runs.RunFolder(existing).params if existing else None)
        threads.apply(p["num_threads"])  # this process and the kernels it starts
        execute.preflight(p)
        run_dir = existing or runs.claim_run_dir(
            runs.new_run_dir(runs_dir, args.run_name, p["dataset"], args.timestamp)
        )
        p["run_dir"] = str(run_dir)
        with runs.writer(run_dir):  # one writer per run folder; its state read under the lock
            folder = runs.RunFolder(run_dir)
            todo = notebooks_to_run(args.stage, folder, chosen_method(args))
            for name in todo:
                folder.check_compatible(p, name)
            return _execute(run_dir, folder, p, todo)
    except ValueError as e:  # parameters, data, a run folder held by another process
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk: one line; the status records the failure
        print(
            f"error: {execute.disk_error(e, run_dir or Path(args.runs_dir or '.'))}",
            file=sys.stderr,
        )
        return 1


def _execute(run_dir: Path, folder: runs.RunFolder, p: dict, todo: list[str]) -> int:
    print(f"run folder: {run_dir}")
    if folder.params is None:
        folder.write_params(p)
    folder.write_plan(todo)
    print(f"index (updated after every stage): {report.write_run_index(run_dir)}")
    try:
        for name in todo:
            execute.run_notebook(name, run_dir, p)
    except KeyboardInterrupt:  # run_notebook recorded the stage failed: one line, no traceback
        print(execute.interrupted(run_dir, todo), file=sys.stderr)
        return 130
    except Exception as e:  # a disk error inside a kernel or here is said as one
        print(f"error: {execute.disk_error(e, run_dir)}", file=sys.stderr)
        return 1
    try:
        index = report.write_run_index(run_dir)
        report.update_reports_index(run_dir)
    except OSError as e:  # every stage is recorded ok: only the index is behind
        print(f"warning: the run index could not be refreshed ({e.strerror})", file=sys.stderr)
        index = run_dir / "index.html"
    print("\n".join(report.console_summary(run_dir) + [f"report: {index}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
