"""Edit wall time and the fix / held-out-regression trade-off of every registered editor, on a
run's model, at the run's parameters (or others given with --set).

    .venv/bin/python benchmarks/bench_edit.py reports/runs/<run> [--methods alphaedit memit]
        [--set L2=0.5 --set nullspace_threshold=1e-4]

Uses the run's split, fine-tuned checkpoint, errors (``max_edits``, ``edit_selection``) and
statistics samples (``projection_samples``, cached under <checkpoint_dir>/stats) exactly as
notebooks 04/05 do (:mod:`vitedit.stages`), and writes nothing to the run folder. Times the
statistics and the edit separately (a second layer edit finds the statistics cached). Held-out
regression: the share of correctly classified FT-Train samples *not* used for the statistics that
the edit makes wrong. Prints one JSON line per method.
"""

import argparse
import json
from pathlib import Path

from vitedit import evaluation, methods, nb, params, stages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--methods", nargs="+", default=methods.names(baselines=False))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    given = dict(params.parse_assignment(s) for s in args.set)
    run = nb.start(
        "04_edit_alphaedit", {"run_dir": str(Path(args.run_dir).resolve()), **given}, set()
    )
    ctx = stages.load_context(run)
    sel = stages.select_edits(ctx)
    for name in args.methods:
        res, _ = stages.run_method(ctx, methods.get(name), sel)
        row = evaluation.edit_summary(ctx.evaluator, name, res, ctx.model, sel.stats_positions)
        layer_info = res.info.get("layer_info", {})
        print(
            json.dumps(
                {
                    "method": name,
                    "settings": {k: ctx.params[k] for k in methods.get(name).params},
                    "n_edits": row["n_edits"],
                    "fix_rate": round(row["fix_rate"], 3),
                    "heldout_regression": round(row["ft_heldout_regression_rate"], 3),
                    "heldout_n": row["ft_heldout_n"],
                    "edit_seconds": round(res.info["edit_seconds"], 3),
                    "stats_seconds": round(res.info["stats_seconds"], 3),
                    "stats_cached": [v.get("cached") for v in layer_info.values()],
                    "kept_dims": [v.get("kept_dim") for v in layer_info.values()],
                },
                default=str,
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
