"""Wall time of fine-tuning the default config on RetinaMNIST, and its FT-Val / Test accuracy.

    .venv/bin/python benchmarks/bench_train.py                 # default params (base.yaml)
    .venv/bin/python benchmarks/bench_train.py seed=0 epochs=60

Trains into a fresh temporary checkpoint folder (nothing is reused) and prints one JSON line.
Floor (issue 2): Test accuracy >= 0.50 with training <= 6 minutes on 2 cores.
"""

import json
import sys
import tempfile
import time

import torch

from vitedit import datasets, evaluation, models, params, splits, train


def main(argv):
    p = params.resolve({"progress": False})
    for a in argv:
        k, v = params.parse_assignment(a)
        p[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        p["checkpoint_dir"] = tmp
        data = datasets.load(p)
        split = splits.make_split(data, p["ft_train_ratio"], p["seed"])
        t0 = time.perf_counter()
        r = train.fit(p, data, split, progress=False, log=lambda *a: None)
        total = time.perf_counter() - t0
    acc = evaluation.set_accuracy_table(r.model, data, split, models.get_config(p["model"]))
    out = {
        "model": p["model"],
        "seed": p["seed"],
        "epochs_run": len(r.history),
        "threads": torch.get_num_threads(),
        "seconds_total": round(total, 1),
        "seconds_per_epoch": round(float(r.history.seconds.mean()), 2),
        "best_epoch": r.meta["best_epoch"],
        **{f"acc_{s}": round(float(a), 4) for s, a in zip(acc.set, acc.accuracy)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
