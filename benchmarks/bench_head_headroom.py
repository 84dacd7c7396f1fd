"""How much Test accuracy does a refit of the classifier head gain on a trained model? (issue 30)

Refits the head by :func:`vitedit.editors.head_refit.refit_head` (mean cross-entropy plus a ridge
``l2`` toward the original head: what ``head_dfr`` solves) on labelled sets of the same model's
pre-logit features, and reports FT-Val's and Test's net accuracy change and regression rate:

- ``edit_discovery``: every labelled Edit-Discovery sample (``head_dfr`` itself: all the held-out
  labelled data an editor may read). FT-Val is out of sample for it, so its operating point can be
  chosen there without Test;
- ``edit_discovery+ft_val``: the same plus FT-Val (2.4x the labelled held-out data on BloodMNIST;
  not a method: FT-Val is in-sample for it, and chooses the operating points);
- ``test/2``: Test cross-fitted in halves (each half's head fitted on the other half, every Test
  sample judged once, out of sample): what this refit gains with as many labelled samples of Test's
  own distribution as Test has, half at a time;
- ``test``: Test itself, in-sample (fitted on the samples it is judged on): not a method, not an
  accuracy bound either (cross-entropy with a ridge, not accuracy, is what it maximises); beside
  ``test/2`` it shows how much of a Test gain is fitted noise.

Per (fit, l2) the net Test change pooled over seeds gets a 95 % interval
(:func:`vitedit.seedstats.cluster_delta`, Test shared by the seeds). With ``choose=SEEDS``, the
``edit_discovery`` refit's operating point is chosen on those seeds' FT-Val alone (the largest mean
FT-Val change among the settings whose mean FT-Val regression is at most ``budget``, default
0.005) and reported on the other seeds' Test: out of selection.

    .venv/bin/python benchmarks/bench_head_headroom.py dataset=bloodmnist \
        seeds=42,43,44,45,46,47,48,49 choose=42,43,44 budget=0.005 out=/tmp/headroom.csv

Needs the trained checkpoints of ``vitedit --stage train`` (``checkpoint_dir``, default
checkpoints/). One thread; a few seconds per seed for the features, then about a second per fit.
"""

import sys

import numpy as np
import pandas as pd
import torch

from vitedit import checkpoints, datasets, evaluation, models, params, seedstats, splits
from vitedit.editors.head import HeadFeatures, head_parameters
from vitedit.editors.head_refit import refit_head

FITS = ("edit_discovery", "edit_discovery+ft_val", "test/2", "test")
L2 = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 1.0)
MAX_ITER = 2000


def features(p: dict, data, seed: int) -> dict:
    """Pre-logit features (as head keys ``[f; 1]``), labels and ``Θ0`` of the checkpoint trained
    for ``seed`` under ``p``'s recipe."""
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


def _halves(n: int) -> list[np.ndarray]:
    """Test's two folds (a fixed permutation: every seed's model is judged on the same folds)."""
    perm = np.random.default_rng(0).permutation(n)
    return [np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])]


def headroom(feats: dict, fit: str, l2: float) -> dict:
    """One refit of ``feats``' head on ``fit`` (a '+'-joined list of sets; ``test/2``: Test
    cross-fitted in halves), judged on FT-Val and Test by :func:`vitedit.evaluation.transitions`,
    with the solver's iterations and final gradient norm (did it converge?)."""
    theta0 = feats["theta0"]
    if fit == "test/2":
        keys, labels = feats["test"]
        folds = _halves(len(labels))
        heads = []
        for i, judged in enumerate(folds):
            fitted = folds[1 - i]
            heads.append((judged, *_refit(theta0, keys[fitted], labels[fitted], l2)))
        pred = {"test": (keys @ theta0.T).argmax(1).clone()}
        for judged, theta, _ in heads:
            pred["test"][judged] = (keys[judged] @ theta.T).argmax(1)
        pred["ft_val"] = (feats["ft_val"][0] @ heads[0][1].T).argmax(1)  # the first fold's head
        solver = heads[0][2]
    else:
        names = fit.split("+")
        x = torch.cat([feats[n][0] for n in names])
        y = torch.cat([feats[n][1] for n in names])
        theta, solver = _refit(theta0, x, y, l2)
        pred = {n: (feats[n][0] @ theta.T).argmax(1) for n in ("ft_val", "test")}
    row = {"fit": fit, "l2": l2, **solver}
    for name in ("ft_val", "test"):
        keys, labels = feats[name]
        t = evaluation.transitions(
            labels.numpy(), (keys @ theta0.T).argmax(1).numpy(), pred[name].numpy()
        )
        row[f"{name}_n"] = t["n"]
        row[f"{name}_delta_points"] = 100 * (t["acc_after"] - t["acc_before"])
        row[f"{name}_regression_pct"] = 100 * t["regression_rate"]
        row[f"{name}_fixed"], row[f"{name}_broken"] = t["wrong_to_correct"], t["correct_to_wrong"]
    return row


def _refit(theta0, x, y, l2) -> tuple[torch.Tensor, dict]:
    theta, solver = refit_head(theta0, x, y, l2, MAX_ITER)
    return theta, {
        "solver_iterations": solver["n_iter"],
        "final_grad_max": solver["final_grad_max"],
    }


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per (fit, l2): mean FT-Val change and regression over the seeds, and Test's net change
    pooled over the seeds with its 95 % interval (Test shared by the seeds) and regression rate."""
    rows = []
    for (fit, l2), g in df.groupby(["fit", "l2"], sort=False):
        d = seedstats.cluster_delta(g.test_fixed, g.test_broken, g.test_n, shared=True)
        rows.append(
            {
                "fit": fit,
                "l2": l2,
                "seeds": len(g),
                "ft_val_delta_points": g.ft_val_delta_points.mean(),
                "ft_val_regression_pct": g.ft_val_regression_pct.mean(),
                "test_delta_points": 100 * d["delta"],
                "test_delta_ci95": tuple(round(100 * v, 2) for v in d["ci95"]),
                "test_regression_pct": g.test_regression_pct.mean(),
                "max_solver_iterations": g.solver_iterations.max(),
                "max_final_grad": g.final_grad_max.max(),
            }
        )
    return pd.DataFrame(rows)


def choose(df: pd.DataFrame, design: list[int], budget: float) -> float | None:
    """The ``edit_discovery`` refit's ridge chosen on the design seeds' FT-Val alone: the largest
    mean FT-Val change among the settings whose mean FT-Val regression is within ``budget`` (a
    share); None when none is."""
    d = df[(df.fit == "edit_discovery") & df.seed.isin(design)]
    m = d.groupby("l2")[["ft_val_delta_points", "ft_val_regression_pct"]].mean()
    m = m[m.ft_val_regression_pct <= 100 * budget]
    return None if m.empty else float(m.ft_val_delta_points.idxmax())


def _shown(table: pd.DataFrame) -> str:
    out = table.round(3)
    out["l2"] = table.l2.map("{:g}".format)
    out["max_final_grad"] = table.max_final_grad.map("{:.1e}".format)
    return out.to_string(index=False)


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    dataset = opts.pop("dataset", "bloodmnist")
    seeds = [int(s) for s in opts.pop("seeds", "42,43,44").split(",")]
    design = [int(s) for s in opts.pop("choose", "").split(",") if s]
    budget = float(opts.pop("budget", 0.005))
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
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(_shown(summarise(df)))
        if design:
            l2 = choose(df, design, budget)
            rest = df[~df.seed.isin(design)]
            print(f"\nhead_dfr's ridge chosen on seeds {design}' FT-Val at <= {budget:.1%}: {l2}")
            if l2 is not None and len(rest):
                picked = rest[(rest.fit == "edit_discovery") & (rest.l2 == l2)]
                print("out of selection, on the other seeds:")
                print(_shown(summarise(picked)))
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
