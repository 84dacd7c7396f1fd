"""Edit wall time and the fix / held-out-regression trade-off of every editor, on a run's model.

    .venv/bin/python benchmarks/bench_edit.py reports/runs/<run> [--layers 9 10 11] [--grid]

Uses the run's split and fine-tuned checkpoint, its first ``max_edits`` Edit-Discovery errors and
``projection_samples`` FT-Train samples for the statistics (cached under checkpoints/stats). Times the
statistics and the edit separately (a second AlphaEdit call finds the statistics cached). Held-out
regression: the share of correctly classified FT-Train samples *not* used for the statistics that
the edit makes wrong. Prints one JSON line per setting.
Floor (issue 4): edit <= 10 s for max_edits errors on 3 layers on 2 cores once statistics are cached.
"""

import argparse
import json

from vitedit import datasets, editing, evaluation, locate, methods, paths, runs, splits, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--layers", type=int, nargs="+", help="default: the run's edit_layers.json")
    ap.add_argument(
        "--grid", action="store_true", help="a few L2 / threshold settings, not just the run's"
    )
    args = ap.parse_args()
    p = runs.stored_params(args.run_dir)
    data = datasets.load(p, log=lambda *a: None)
    split = splits.load(args.run_dir, expect=p, data=data)
    model, meta = train.load_run_model(args.run_dir, split, params=p)
    cfg = train.model_config_of(meta)
    ref = train.run_checkpoint_ref(args.run_dir)
    layers = args.layers or locate.load_edit_layers(args.run_dir)["layers"]
    y, pred, _ = evaluation.predictions(model, data, split, "edit_discovery", cfg)
    errors = locate.select_errors(y, pred, p["max_edits"])
    pos = editing.stats_positions(
        len(split.indices["ft_train"]), p["projection_samples"], p["seed"]
    )
    es = editing.edit_data(data, split, pos, errors)
    cache = paths.resolve(p["checkpoint_dir"]) / "stats"
    settings = [dict(l2=p["L2"], thr=p["nullspace_threshold"], rel=p["nullspace_relative"])]
    if args.grid:
        settings = [
            dict(l2=l2, thr=thr, rel=None) for l2 in (1e-4, 1e-2, 1e-1, 1.0) for thr in (1e-2, 1e-4)
        ]
        settings += [dict(l2=l2, thr=None, rel=0.01) for l2 in (1e-2, 1e-1)]
    editors = []  # every editor built from the registry, under the parameters' own names
    context = {"layers": layers, "cache_dir": cache, "cache_key": {"checkpoint": ref["sha256"]}}
    for s in settings:
        q = dict(p, L2=s["l2"], nullspace_threshold=s["thr"] or 1e-2, nullspace_relative=s["rel"])
        for name in ("alphaedit", "memit"):
            if name == "memit" and (s["rel"] is not None or s["thr"] != settings[0]["thr"]):
                continue  # MEMIT ignores the null-space settings: one row per L2
            editors.append((s, methods.get(name).build(q, **context)))
    editors += [({}, methods.get(name).build(p)) for name in ("head", "head_closed_form")]
    for s, ed in editors:
        res = ed.edit(model, cfg, es)
        row = evaluation.edit_summary(ed.name, res, model, data, split, pos, cfg)
        out = {
            "method": ed.name,
            **s,
            "layers": layers if methods.get(ed.name).uses_layers else None,
            "n_edits": row["n_edits"],
            "fix_rate": round(row["fix_rate"], 3),
            "heldout_regression": round(row["ft_heldout_regression_rate"], 3),
            "heldout_n": row["ft_heldout_n"],
            "edit_seconds": round(res.info["edit_seconds"], 3),
            "stats_seconds": round(res.info["stats_seconds"], 3),
            "stats_cached": [v.get("cached") for v in res.info.get("layer_info", {}).values()],
            "kept_dims": [v.get("kept_dim") for v in res.info.get("layer_info", {}).values()],
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
