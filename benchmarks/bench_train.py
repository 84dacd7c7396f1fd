"""Wall time of fine-tuning the default config on RetinaMNIST, and its FT-Val / Test accuracy.

    .venv/bin/python benchmarks/bench_train.py                 # default params (base.yaml)
    .venv/bin/python benchmarks/bench_train.py seed=0 epochs=60
    .venv/bin/python benchmarks/bench_train.py dataset=bloodmnist epochs=20 \
        checkpoint_dir=checkpoints curve=reports/curves/bloodmnist.csv

Trains into a fresh temporary checkpoint folder (nothing is reused) unless `checkpoint_dir=` is
given (then the checkpoint is kept for the study and the sweep to reuse) and prints one JSON line.
`curve=PATH` writes the per-epoch history with its cumulative wall time (accuracy vs wall time);
the curve is FT-Val accuracy: Test is never looked at during training.
Floors: RetinaMNIST Test >= 0.50 with training <= 6 minutes on 2 cores (issue 2); BloodMNIST
>= 0.93 within 20 minutes and OrganAMNIST >= 0.90 within 40 minutes (issue 12).
"""

import json
import os
import sys
import tempfile
import time

import torch

from vitedit import datasets, evaluation, models, params, splits, train


def main(argv):
    p = params.resolve({"progress": False})
    curve = None
    keep = False
    for a in argv:
        if a.startswith("curve="):
            curve = a.split("=", 1)[1]
            continue
        k, v = params.parse_assignment(a)
        p[k] = v
        keep |= k == "checkpoint_dir"
    with tempfile.TemporaryDirectory() as tmp:
        if not keep:
            p["checkpoint_dir"] = tmp
        data = datasets.load(p)
        split = splits.make_split(data, p["ft_train_ratio"], p["seed"])
        t0 = time.perf_counter()
        r = train.fit(p, data, split, progress=False, log=lambda *a: None)
        total = time.perf_counter() - t0
    runner = models.Runner(models.get_config(p["model"]), p["eval_batch_size"], "cpu")
    ev = evaluation.Evaluator.from_params(p, data, split, runner)
    acc = evaluation.set_accuracy_table(ev, r.model)
    if curve:
        h = r.history.copy()
        h["wall_seconds"] = h.seconds.cumsum()
        os.makedirs(os.path.dirname(curve) or ".", exist_ok=True)
        h.to_csv(curve, index=False)
    n_train = len(split.indices["ft_train"])
    out = {
        "dataset": p["dataset"],
        "model": p["model"],
        "seed": p["seed"],
        "epochs_run": len(r.history),
        "threads": torch.get_num_threads(),
        "seconds_total": round(total, 1),
        "seconds_per_epoch": round(float(r.history.seconds.mean()), 2),
        "train_images_per_s": round(n_train / float(r.history.seconds.mean()), 1),
        "reused": r.reused,
        "best_epoch": r.meta["best_epoch"],
        **{f"acc_{s}": round(float(a), 4) for s, a in zip(acc.set, acc.accuracy)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
