"""Does ``num_threads: 1`` mean one thread? A stage alone, then beside a busy neighbour (issue 26).

    .venv/bin/python benchmarks/bench_threads.py RUN_FOLDER [--stage locate] [--set max_samples=12]
        [--lib OTHER_TREE/lib] [--repeats 1]

Runs ``vitedit --stage STAGE --set num_threads=1`` on a copy of RUN_FOLDER (a run whose earlier
stages are done, e.g. the default RetinaMNIST study), first alone and then beside one busy
single-thread torch process (a matmul loop), and prints both wall times and their ratio. On a 2-core
machine a process whose thread pools ignore the setting runs ~10x slower beside the neighbour
(86 s against 8 s, issue 26); the target is within ~1.5x. ``--lib`` points the CLI and its kernels
at another tree's library (the tree before a change). Run it on a quiet machine: the ratio is the
figure; the absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = (
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(512, 512)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a / 512)\n"
)


def run_stage(run: Path, stage: str, sets: list[str], env: dict) -> float:
    """Wall seconds of one ``vitedit --stage`` on a fresh copy of ``run``."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy)
        cmd = [sys.executable, "-m", "vitedit", "--stage", stage, "--runs-dir", tmp]
        cmd += ["--run-name", run.name, "--no-progress", "--set", "num_threads=1"]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"the stage failed:\n{(r.stdout + r.stderr)[-3000:]}")
        return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder whose earlier stages are done")
    ap.add_argument("--stage", default="locate")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--lib", type=Path, help="the library to run (default: this tree's)")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args(argv)
    load = os.getloadavg()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    if a.lib:
        env["PYTHONPATH"] = str(a.lib.resolve())
        env["VITEDIT_HOME"] = str(a.lib.resolve().parent)
    alone = min(run_stage(a.run, a.stage, a.sets, env) for _ in range(a.repeats))
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env={**env, "OMP_NUM_THREADS": "1"})
    try:
        time.sleep(3)  # the neighbour is busy before the stage starts
        beside = min(run_stage(a.run, a.stage, a.sets, env) for _ in range(a.repeats))
    finally:
        busy.kill()
    print(f"stage {a.stage}, num_threads=1, cores {os.cpu_count()}, load before {load}")
    print(f"alone:                 {alone:7.1f} s")
    print(f"beside a busy process: {beside:7.1f} s")
    print(f"ratio:                 {beside / alone:7.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
