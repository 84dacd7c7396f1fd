"""Does bf16 training keep the accuracy of fp32? FT-Val and Test of fp32 and bf16 (math attention)
trained at equal epochs on several seeds, each bf16 figure against the 95 % Wilson interval of the
same seed's fp32 figure, and the speed of both, in one run.

    .venv/bin/python benchmarks/bench_precision.py dataset=bloodmnist seeds=1,2,3 epochs=10 \
        out=/tmp/precision.json

Each training is one ``benchmarks/bench_train.py`` process with one thread (two run side by side on
2 cores, each with its own thread: ``num_threads=1`` reaches every pool). Seeds other than the
design seeds 42-44 are the check's own. Prints one JSON line per training and a verdict line;
``train_precision: auto`` (fp32 on the CPU) stays the default unless every bf16 figure lies inside
its fp32 interval.
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


def _set_sizes(dataset: str) -> dict[str, int]:
    """Images behind each accuracy (FT-Val = official val, Test = official test)."""
    from vitedit import datasets, params

    data = datasets.load(
        params.resolve({"dataset": dataset, "progress": False}), log=lambda *a: None
    )
    return {"acc_FT-Val": len(data.labels["val"]), "acc_Test": len(data.labels["test"])}


if __name__ == "__main__":
    main(sys.argv[1:])
