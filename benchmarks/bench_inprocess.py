"""What a grid point costs: today's per-experiment path (a process and two notebook kernels per
experiment) against the in-process path (one process per dataset x seed; issue 26).

    .venv/bin/python benchmarks/bench_inprocess.py --dataset retinamnist --out /tmp/bench_ip \
        [--data-path FILE] [--checkpoint-dir DIR] [--set epochs=4] [--points 3]

Runs one sweep twice on the same trained checkpoint (``--checkpoint-dir``, trained by the first
run when missing): a head method's grid (``head_closed_form``, ``head_margin``) and a layer
method's (``alphaedit``, ``L2``), ``--points`` values each, one seed, one thread per process
(``num_threads: 1``), one experiment at a time. Prints per method the seconds per grid point on
each path (the notebook path: each experiment's wall time as the sweep saw it; the in-process
path: the experiments phase's wall time, process start and loading included, shared out over its
points) and their ratio, and checks that both summaries hold the same figures. Run it on a quiet
machine; the ratios are the figures. The in-process path's fixed cost (process start, loading, the
base pass and the selection) is shared by every experiment of a unit: the last column shares it
over ``--unit-size`` experiments (default 134, a BloodMNIST design seed's unit in the benchmark)
instead of this run's few points.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    "head_closed_form": ("head_margin", [0.5, 1.0, 3.0, 0.25, 2.0, 5.0]),
    "alphaedit": ("L2", [10.0, 1.0, 100.0, 3.0, 30.0, 0.3]),
}
RUN_COLUMNS = ("job_seconds", "papermill_overhead_seconds", "run_dir", "report", "wall_seconds")


def sweep(spec: dict, folder: Path, a) -> tuple[float, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "vitedit.sweep", "run", str(f), "--sweep-dir", str(folder / "sw")]
    cmd += ["--checkpoint-dir", str(a.checkpoint_dir), "--no-progress", "--no-report"]
    if a.data_path:
        cmd += ["--data-path", str(a.data_path)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"sweep failed:\n{(r.stdout + r.stderr)[-3000:]}")
    log = json.loads((folder / "sw" / "sweep_log.json").read_text())[-1]
    print(f"  {folder.name}: {time.perf_counter() - t0:.0f} s ({log})")
    return log["experiments_seconds"], folder / "sw"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="retinamnist")
    ap.add_argument("--data-path", type=Path)
    ap.add_argument("--checkpoint-dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--points", type=int, default=3)
    ap.add_argument("--unit-size", type=int, default=134)
    a = ap.parse_args(argv)
    a.checkpoint_dir = a.checkpoint_dir or a.out / "ckpt"
    fixed = {"num_threads": 1}
    for s in a.sets:
        k, v = s.split("=", 1)
        fixed[k] = yaml.safe_load(v)
    spec = {
        "name": "bench_inprocess",
        "params": [str(ROOT / "params" / "base.yaml"), str(ROOT / "params" / f"{a.dataset}.yaml")],
        "set": fixed,
        "seeds": [42],
        "methods": list(GRIDS),
        "baselines": False,
        "method_grids": {m: {k: v[: a.points]} for m, (k, v) in GRIDS.items()},
    }
    print(f"load before: {os.getloadavg()}, cores {os.cpu_count()}")
    _, slow_dir = sweep(spec, a.out / "notebooks", a)
    fast_s, fast_dir = sweep({**spec, "in_process": True}, a.out / "in_process", a)
    summary = f"param_search_summary_{a.dataset}.csv"
    slow, fast = pd.read_csv(slow_dir / summary), pd.read_csv(fast_dir / summary)
    keep = [c for c in slow.columns if c not in RUN_COLUMNS and "seconds" not in c]
    key = ["method", "config_id"]
    same = (
        fast[keep]
        .sort_values(key)
        .reset_index(drop=True)
        .equals(slow[keep].sort_values(key).reset_index(drop=True))
    )
    per_point_fast = fast_s / len(fast)
    print(f"\nseconds per grid point ({len(slow)} points, 1 thread each, one at a time)")
    print(
        f"{'method':18s} {'notebooks':>10s} {'in-process':>11s} {'ratio':>7s}"
        f"   in a unit of {a.unit_size}: s, ratio"
    )
    for m in GRIDS:
        old = slow.loc[slow.method == m, "job_seconds"].mean()  # the wall time the sweep saw
        own = fast.loc[fast.method == m, "job_seconds"].mean()
        share = (fast_s - fast.job_seconds.sum()) / len(fast)  # process start, loading, shared work
        new = own + share
        unit = own + share * len(fast) / a.unit_size
        print(
            f"{m:18s} {old:10.1f} {new:11.2f} {old / new:6.1f}x   {unit:.2f} {old / unit:.1f}x"
            f"   (own {own:.2f} s)"
        )
    print(f"in-process experiments phase: {fast_s:.1f} s, {per_point_fast:.2f} s per point")
    print(f"same figures at every grid point: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
