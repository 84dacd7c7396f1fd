"""Does bf16 training keep the accuracy of fp32? FT-Val and Test of fp32 and bf16 (math attention)
trained at equal epochs on several seeds, each bf16 figure against the 95 % Wilson interval of the
same seed's fp32 figure, and the speed of both, in one run.

    .venv/bin/python benchmarks/bench_precision.py dataset=bloodmnist seeds=1,2,3 epochs=10 \
        out=/tmp/precision.json

Each training is one ``benchmarks/bench_train.py`` process with one thread (two run side by side on
2 cores, each with its own thread: ``num_threads=1`` reaches every pool). Prints one JSON line per
training and a verdict line; bf16 may replace fp32 for a recipe only if every bf16 figure lies
inside its fp32 interval.

Or, without training anything, from the study's own training runs (``vitedit --stage train`` with
``--set train_precision=fp32`` and ``bf16``, the full recipe of each dataset's params file):

    .venv/bin/python benchmarks/bench_precision.py runs=reports/runs,/other/runs \
        out=/tmp/precision.json

pairs every bf16 run with the fp32 run of the same dataset, seed and recipe (the checkpoint's
recorded fields, precision and attention aside) and checks each pair the same way; the speed is
each run's recorded seconds per epoch (a figure only if the runs had the machine to themselves).
"""

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` images."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def train_one(dataset: str, seed: int, epochs: int, precision: str, extra: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(HERE / "bench_train.py"), f"dataset={dataset}", f"seed={seed}"]
    cmd += [f"epochs={epochs}", f"train_precision={precision}", "num_threads=1", "patience=0"]
    out = subprocess.run(cmd + extra, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["precision"] = precision
    print(json.dumps(row), flush=True)
    return row


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    if "runs" in opts:
        return from_runs([Path(d) for d in opts["runs"].split(",")], opts.get("out"))
    dataset = opts.pop("dataset", "bloodmnist")
    seeds = [int(s) for s in opts.pop("seeds", "1,2,3").split(",")]
    epochs = int(opts.pop("epochs", 10))
    out_file = opts.pop("out", None)
    extra = [f"{k}={v}" for k, v in opts.items()]
    jobs = [(s, p) for s in seeds for p in ("fp32", "bf16")]
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(lambda j: train_one(dataset, j[0], epochs, j[1], extra), jobs))
    sizes = _set_sizes(dataset)
    checks, inside = [], True
    for s in seeds:
        a = next(r for r in rows if r["seed"] == s and r["precision"] == "fp32")
        b = next(r for r in rows if r["seed"] == s and r["precision"] == "bf16")
        for key, n in sizes.items():
            lo, hi = wilson(a[key], n)
            ok = lo <= b[key] <= hi
            inside &= ok
            checks.append(
                dict(seed=s, set=key, fp32=a[key], bf16=b[key], ci=[round(lo, 4), round(hi, 4)])
                | dict(inside=ok, n=n)
            )
    speed = {
        p: round(sum(r["train_images_per_s"] for r in rows if r["precision"] == p) / len(seeds), 1)
        for p in ("fp32", "bf16")
    }
    verdict = {
        "dataset": dataset,
        "epochs": epochs,
        "seeds": seeds,
        "train_images_per_s_1_thread": speed,
        "speedup": round(speed["bf16"] / speed["fp32"], 2),
        "every_bf16_figure_inside_the_fp32_interval": inside,
        "checks": checks,
    }
    print(json.dumps(verdict))
    if out_file:
        Path(out_file).write_text(json.dumps({"runs": rows, **verdict}, indent=2))


def _runs(dirs: list[Path]) -> list[dict]:
    """Every finished training run under ``dirs``: its checkpoint's fields and set accuracies."""
    import pandas as pd

    rows = []
    for d in dirs:
        for ck in sorted(d.glob("*/checkpoint.json")):
            acc_file = ck.parent / "set_accuracy.csv"
            hist_file = ck.parent / "training_metrics.csv"
            if not acc_file.exists():
                continue
            fields = json.loads(ck.read_text())["fields"]
            acc = pd.read_csv(acc_file).set_index("set")
            hist = pd.read_csv(hist_file) if hist_file.exists() else None
            recipe = {k: v for k, v in fields.items() if k not in ("precision", "attention")}
            n_train = int(acc.loc["FT-Train", "n"])
            rows.append(
                dict(run=str(ck.parent), dataset=fields["dataset"], seed=fields["seed"])
                | dict(precision=fields["precision"], recipe=json.dumps(recipe, sort_keys=True))
                | {f"acc_{s}": float(acc.loc[s, "accuracy"]) for s in ("FT-Val", "Test")}
                | {f"n_{s}": int(acc.loc[s, "n"]) for s in ("FT-Val", "Test")}
                | dict(epochs_run=None if hist is None else len(hist))
                | dict(
                    median_images_per_s=None
                    if hist is None
                    else round(n_train / float(hist.seconds.median()), 1)
                )
            )
    return rows


def from_runs(dirs: list[Path], out_file: str | None) -> dict:
    """The check over training runs already made: each bf16 run against the fp32 run of the same
    dataset, seed and recipe."""
    rows = _runs(dirs)
    checks, inside, pairs = [], True, []
    for b in (r for r in rows if r["precision"] == "bf16"):
        match = [r for r in rows if r["precision"] == "fp32" and r["recipe"] == b["recipe"]]
        if not match:
            continue
        a = match[0]
        pairs.append((a, b))
        for s in ("FT-Val", "Test"):
            lo, hi = wilson(a[f"acc_{s}"], a[f"n_{s}"])
            ok = lo <= b[f"acc_{s}"] <= hi
            inside &= ok
            checks.append(
                dict(dataset=b["dataset"], seed=b["seed"], set=s, fp32=round(a[f"acc_{s}"], 4))
                | dict(bf16=round(b[f"acc_{s}"], 4), ci=[round(lo, 4), round(hi, 4)], inside=ok)
                | dict(n=a[f"n_{s}"], epochs_run=[a["epochs_run"], b["epochs_run"]])
                | dict(images_per_s=[a["median_images_per_s"], b["median_images_per_s"]])
            )
    if not pairs:
        raise SystemExit(f"no bf16 run with an fp32 run of the same recipe under {dirs}")
    verdict = {
        "pairs": len(pairs),
        "every_bf16_figure_inside_the_fp32_interval": inside,
        "mean_difference_bf16_minus_fp32": {
            s: round(sum(b[f"acc_{s}"] - a[f"acc_{s}"] for a, b in pairs) / len(pairs), 4)
            for s in ("FT-Val", "Test")
        },
        "checks": checks,
    }
    for c in checks:
        print(json.dumps(c))
    print(json.dumps({k: v for k, v in verdict.items() if k != "checks"}))
    if out_file:
        Path(out_file).write_text(json.dumps(verdict, indent=2))
    return verdict


def _set_sizes(dataset: str) -> dict[str, int]:
    """Images behind each accuracy (FT-Val = official val, Test = official test)."""
    from vitedit import datasets, params

    data = datasets.load(
        params.resolve({"dataset": dataset, "progress": False}), log=lambda *a: None
    )
    return {"acc_FT-Val": len(data.labels["val"]), "acc_Test": len(data.labels["test"])}


if __name__ == "__main__":
    main(sys.argv[1:])
