"""What does retraining with the Edit-Discovery errors gain on Test, and at what cost? (issue 30)

The reference issue 30 asks for beside any edit: the registered ``baseline_retrain``
(:class:`vitedit.baselines.RetrainBaseline`, the original recipe from the same initialisation, the
epoch chosen on FT-Val) trained on FT-Train plus the base model's Edit-Discovery errors, at their
true labels:

- ``errors=all`` (default): every Edit-Discovery error of the base model (what a retrain given all
  the errors an editor could be shown learns from);
- ``errors=first``: the first ``max_edits`` of them (the benchmark's ``edit_selection: first``, the
  errors every method edits);
- ``errors=control``: as many Edit-Discovery samples the base model gets right, drawn at random
  (seeded): the same retrain with samples that teach nothing new. Adding any samples reshuffles the
  whole training (another data order), so a retrain changes many predictions whatever it adds;
  ``all`` minus ``control`` is what the errors themselves buy.

Per seed it reports the retrained model against the base model on Test (net change, regression
rate, errors fixed and correct predictions broken), the added errors fixed (in-sample: they are in
its training set) and the training's seconds. FT-Val is in the rows as ``ft_val_*_selected``: both
models' epochs were chosen on it, so it is no estimate and is left out of the summary. Test's net
change is pooled over the seeds with a 95 % interval (:func:`vitedit.seedstats.cluster_delta`, Test
shared by the seeds). No setting is chosen (the retrain has none): every seed is out of selection.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_retrain_reference.py dataset=bloodmnist \
        seeds=45,46 errors=all out=/tmp/retrain_45_46.csv

Needs the base checkpoints of ``vitedit --stage train`` (``checkpoint_dir``); each retrain is a
full training (about 15 min per BloodMNIST seed on one core) and is kept as a checkpoint named by
its training set, so a rerun reuses it (its seconds are then the ones recorded when it trained).
``summary=a.csv,b.csv`` pools earlier outputs without training.
"""

import sys

import numpy as np
import pandas as pd
import torch

from vitedit import (
    checkpoints,
    datasets,
    editors,
    evaluation,
    frontier,
    methods,
    models,
    params,
    selection,
    splits,
)


def base_model(p: dict, data, split):
    path = checkpoints.checkpoint_path(
        p, checkpoints.checkpoint_fields(p, data, split, torch.device("cpu"))
    )
    if not path.is_file():
        raise SystemExit(
            f"no checkpoint for {p['dataset']} seed {p['seed']} at {path}: train it first "
            f"(vitedit --stage train --params params/base.yaml --params params/{p['dataset']}.yaml "
            f"--seed {p['seed']})"
        )
    model, meta = checkpoints.load_checkpoint(path)
    return model.eval(), checkpoints.model_config_of(meta)


def retrain_row(p: dict, data, seed: int, errors: str) -> dict:
    """Retrain seed ``seed``'s model on FT-Train plus its Edit-Discovery errors (``errors``: 'all'
    or 'first') through the registry's ``baseline_retrain``; the two models compared."""
    q = dict(p, seed=seed)
    split = splits.make_split(data, q["ft_train_ratio"], seed)
    model, cfg = base_model(q, data, split)
    runner = models.Runner(cfg, q["eval_batch_size"], torch.device("cpu"))
    y_ed = split.labels(data, "edit_discovery")
    pred = runner.probs(model, split.view(data, "edit_discovery")).argmax(1).numpy()
    wrong = selection.select_errors(y_ed, pred, None)
    if errors == "control":
        right = np.flatnonzero(pred == y_ed)
        k = min(len(wrong), len(right))  # as many as there are errors (all, if fewer are right)
        chosen = np.sort(np.random.default_rng(seed).choice(right, k, replace=False))
    else:
        chosen = selection.select_errors(y_ed, pred, None if errors == "all" else q["max_edits"])
    pos = editors.stats_positions(len(split.indices["ft_train"]), q["projection_samples"], seed)
    es = editors.edit_data(data, split, pos, chosen)
    method = methods.get("baseline_retrain")
    res = method.build(q, params=q, data=data, split=split).edit(model, runner, es)
    row = {
        "dataset": q["dataset"],
        "seed": seed,
        "errors": errors,
        "n_errors_added": len(chosen),
        "n_train": res.info["n_train"],
        "device": "cpu",
        "threads": torch.get_num_threads(),
        # in-sample: they are trained on (a control's samples were right before: no error to fix)
        "added_fixed": float(res.log["fixed"].mean()) if errors != "control" else np.nan,
        "train_seconds": res.info["edit_seconds"],
        "best_epoch": res.info["best_epoch"],
        "reused": res.info["reused"],
    }
    for name in ("ft_val", "test"):
        tag = "_selected" if name == "ft_val" else ""  # both models' epochs were chosen on FT-Val
        x, y = split.view(data, name), split.labels(data, name)
        before = runner.probs(model, x).argmax(1).numpy()
        after = runner.probs(res.model, x).argmax(1).numpy()
        t = evaluation.transitions(y, before, after)
        row[f"{name}_n{tag}"] = t["n"]
        row[f"{name}_delta_points{tag}"] = 100 * (t["acc_after"] - t["acc_before"])
        row[f"{name}_regression_pct{tag}"] = 100 * t["regression_rate"]
        row[f"{name}_fixed{tag}"] = t["wrong_to_correct"]
        row[f"{name}_broken{tag}"] = t["correct_to_wrong"]
        row[f"{name}_correct_before{tag}"] = t["correct_before"]
    return row


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, errors): Test's net change pooled over the seeds with its 95 % interval and
    the pooled regression rate (:func:`vitedit.frontier.retrain_reference`), the mean training
    time."""
    rows = []
    for (dataset, errors), g in df.groupby(["dataset", "errors"], sort=False):
        p = frontier.retrain_reference(g, "all").iloc[0]
        rows.append(
            {
                "dataset": dataset,
                "errors": errors,
                "seeds": len(g),
                "errors_added": g.n_errors_added.mean(),
                "added_fixed_in_sample": g.added_fixed.mean(),
                "test_delta_points": 100 * p.test_delta,
                "test_delta_ci95": (
                    round(100 * float(p.test_delta_low), 2),
                    round(100 * float(p.test_delta_high), 2),
                ),
                "test_regression_pct": 100 * p.test_regression,
                "test_fixed_per_seed": g.test_fixed.mean(),
                "test_broken_per_seed": g.test_broken.mean(),
                "train_seconds": g.train_seconds.mean(),
            }
        )
    return pd.DataFrame(rows)


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    if "summary" in opts:
        df = pd.concat([pd.read_csv(f) for f in opts["summary"].split(",")], ignore_index=True)
    else:
        dataset = opts.pop("dataset", "bloodmnist")
        seeds = [int(s) for s in opts.pop("seeds", "45").split(",")]
        errors = opts.pop("errors", "all")
        if errors not in ("all", "first", "control"):
            raise SystemExit(f"errors={errors!r}: give errors=all, first or control")
        out = opts.pop("out", None)
        torch.set_num_threads(1)
        given = dict(params.parse_assignment(f"{k}={v}") for k, v in opts.items())
        # the CPU recipe of the base checkpoints (on a GPU 'auto' would retrain in another one)
        p = params.resolve(
            "params/base.yaml",
            f"params/{dataset}.yaml",
            {"num_threads": 1, **given, "device": "cpu"},
        )
        data = datasets.load(p, log=lambda *a: None)
        df = pd.DataFrame([retrain_row(p, data, s, errors) for s in seeds])
        if out:
            df.to_csv(out, index=False)
        print(df.round(3).to_string(index=False))
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(summarise(df).round(3).to_string(index=False))
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
