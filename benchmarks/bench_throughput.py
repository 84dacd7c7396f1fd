"""Training throughput of a model config against the CPU's matmul limit, in one run.

    .venv/bin/python benchmarks/bench_throughput.py                       # default config
    .venv/bin/python benchmarks/bench_throughput.py model=vit_small_p4_28 batch_sizes=64,256

For each (batch size, precision) it times full training steps (forward, backward, AdamW step)
on random 28x28 images and reports images/s, the FLOPs per training image (counted by
``torch.utils.flop_counter``), the achieved GFLOP/s and its ratio to a 2048^2 fp32 matmul
measured in the same process (the CPU's practical peak). One JSON line per setting.
Precisions: ``fp32`` (fused attention, the fp32 default), ``bf16`` (CPU autocast with timm's math
attention: what ``train_precision: bf16`` trains with on the CPU) and ``bf16-fused`` (autocast with
the fused attention, whose bf16 backward is slow on the CPU: why the math attention is used);
``ratio_to_own_matmul`` divides by the matmul of the same precision (% of the measured peak).
Run with ``OMP_NUM_THREADS=1`` (and ``torch.set_num_threads``: ``threads=1``) for the per-core figure.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vitedit import models, threads


def matmul_gflops(n: int = 2048, reps: int = 10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def train_flops_per_image(model, x, y) -> float:
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / len(x)


def step_rate(model, bs: int, precision: str, n_classes: int, seconds: float = 20.0) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(bs, 3, 28, 28)
    y = torch.randint(0, n_classes, (bs,))
    amp = precision.startswith("bf16")
    restore = models.use_math_attention(model) if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += bs
    rate = n / (time.perf_counter() - t0)
    if restore is not None:
        restore()
    return rate


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    name = opts.get("model", "vit_small_p4_28")
    sizes = [int(s) for s in opts.get("batch_sizes", "64,128,256").split(",")]
    precisions = opts.get("precisions", "fp32,bf16,bf16-fused").split(",")
    seconds = float(opts.get("seconds", 20))
    if "threads" in opts:
        threads.apply(int(opts["threads"]))
    torch.manual_seed(0)
    cfg = models.get_config(name)
    model = models.build_model(cfg, 8, pretrained=False)
    model.train()
    flops = train_flops_per_image(model, torch.randn(8, 3, 28, 28), torch.randint(0, 8, (8,)))
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(dtype=torch.bfloat16)
    for bs in sizes:
        for prec in precisions:
            rate = step_rate(model, bs, prec, 8, seconds)
            print(
                json.dumps(
                    {
                        "model": name,
                        "threads": torch.get_num_threads(),
                        "batch_size": bs,
                        "precision": prec,
                        "images_per_s": round(rate, 1),
                        "gflop_per_train_image": round(flops / 1e9, 4),
                        "achieved_gflops": round(rate * flops / 1e9, 1),
                        "matmul_fp32_gflops": round(peak, 1),
                        "matmul_bf16_gflops": round(peak_bf16, 1),
                        "ratio_to_fp32_matmul": round(rate * flops / 1e9 / peak, 3),
                        "ratio_to_own_matmul": round(
                            rate * flops / 1e9 / (peak_bf16 if prec.startswith("bf16") else peak), 3
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
