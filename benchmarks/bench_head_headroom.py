"""How much Test accuracy could any classifier-head edit gain on a trained model? (issue 30)

Refits the head by :func:`vitedit.editors.head_refit.refit_head` (cross-entropy, ridge ``l2``
toward the original head: what ``head_dfr`` solves) on three labelled sets of the same model's
pre-logit features, and reports Test's net accuracy change and regression rate per seed:

- ``edit_discovery``: every labelled Edit-Discovery sample (``head_dfr`` itself: all the held-out
  labelled data an editor may read);
- ``edit_discovery+ft_val``: the same plus FT-Val (2.4x the labelled held-out data on BloodMNIST;
  not a method: FT-Val chooses the operating points);
- ``test``: Test itself, an in-sample bound (fitted on the very samples it is judged on: not a
  method, the most a linear head over these features can gain on Test at that ridge).

FT-Val's change is printed beside each fit of Edit-Discovery, so an operating point can be read
without Test. Needs the trained checkpoints of ``vitedit --stage train`` (any folder):

    .venv/bin/python benchmarks/bench_head_headroom.py dataset=bloodmnist seeds=42,43,44 \
        checkpoint_dir=checkpoints out=/tmp/headroom.csv

One thread; a few seconds per seed for the features, then a second per fit.
"""

import sys

import pandas as pd
import torch

from vitedit import checkpoints, datasets, evaluation, models, params, splits
from vitedit.editors.head import HeadFeatures, head_parameters
from vitedit.editors.head_refit import refit_head

FITS = ("edit_discovery", "edit_discovery+ft_val", "test")
L2 = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 1.0)


def features(p: dict, data, seed: int) -> dict:
    """Pre-logit features, labels and ``Θ0`` of the checkpoint trained for ``seed``."""
    q = dict(p, seed=seed)
    split = splits.make_split(data, q["ft_train_ratio"], seed)
    path = checkpoints.checkpoint_path(
        q, checkpoints.checkpoint_fields(q, data, split, torch.device("cpu"))
    )
    if not path.is_file():
        raise SystemExit(
            f"no checkpoint for {q['dataset']} seed {seed} at {path}: train it first "
            f"(vitedit --stage train --params params/base.yaml --params params/{q['dataset']}.yaml "
            f"--seed {seed})"
        )
    model, meta = checkpoints.load_checkpoint(path)
    cfg = checkpoints.model_config_of(meta)
    out = {"theta0": head_parameters(model)}
    for name in ("edit_discovery", "ft_val", "test"):
        f = models.predict_pre_logits(model, split.view(data, name), cfg, q["eval_batch_size"])
        out[name] = (HeadFeatures.keys(f), torch.as_tensor(split.labels(data, name)).long())
    return out


def headroom(feats: dict, fit: str, l2: float) -> dict:
    """One refit of ``feats``' head on ``fit`` (a '+'-joined list of sets), judged on FT-Val and
    Test by :func:`vitedit.evaluation.transitions`."""
    names = fit.split("+")
    x = torch.cat([feats[n][0] for n in names])
    y = torch.cat([feats[n][1] for n in names])
    theta0 = feats["theta0"]
    theta, _ = refit_head(theta0, x, y, l2)
    row = {"fit": fit, "l2": l2}
    for name in ("ft_val", "test"):
        keys, labels = feats[name]
        t = evaluation.transitions(
            labels.numpy(), (keys @ theta0.T).argmax(1).numpy(), (keys @ theta.T).argmax(1).numpy()
        )
        row[f"{name}_delta_points"] = 100 * (t["acc_after"] - t["acc_before"])
        row[f"{name}_regression_pct"] = 100 * t["regression_rate"]
        row[f"{name}_fixed"], row[f"{name}_broken"] = t["wrong_to_correct"], t["correct_to_wrong"]
    return row


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    dataset = opts.pop("dataset", "bloodmnist")
    seeds = [int(s) for s in opts.pop("seeds", "42,43,44").split(",")]
    out = opts.pop("out", None)
    torch.set_num_threads(1)
    given = dict(params.parse_assignment(f"{k}={v}") for k, v in opts.items())
    p = params.resolve("params/base.yaml", f"params/{dataset}.yaml", given)
    data = datasets.load(p, log=lambda *a: None)
    rows = []
    for seed in seeds:
        feats = features(p, data, seed)
        for fit in FITS:
            for l2 in L2:
                rows.append({"dataset": dataset, "seed": seed, **headroom(feats, fit, l2)})
    df = pd.DataFrame(rows)
    if out:
        df.to_csv(out, index=False)
    cols = [
        "ft_val_delta_points",
        "ft_val_regression_pct",
        "test_delta_points",
        "test_regression_pct",
    ]
    summary = df.groupby(["fit", "l2"])[cols].agg(["mean", "min", "max"]).round(2)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary)
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
