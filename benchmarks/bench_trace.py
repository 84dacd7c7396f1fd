"""Batched causal tracer vs the one-restoration-per-pass reference, on the default model.

    .venv/bin/python benchmarks/bench_trace.py [--samples 3] [--checkpoint PATH] [--scopes all cls]

Per sample: every restoration of the default locate parameters (block/mlp/attn x 12 layers x the
scopes) x 32 noisy copies. The reference runs one full forward pass per (restoration, noisy copy);
the batched tracer shares the corrupted run and batches restorations starting at the same layer.
Each sample is timed ``--repeats`` times (interleaved) and the fastest run counts. Prints one JSON
line. Floor (issue 3): batched >= 10x faster, max abs difference <= 1e-5.
"""

import argparse
import json
import time

import numpy as np
import torch

from vitedit import checkpoints, locate, models, params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument(
        "--checkpoint", help="a trained checkpoint (default: the default config, random weights)"
    )
    ap.add_argument("--scopes", nargs="+", default=params.defaults()["trace_scopes"])
    ap.add_argument(
        "--repeats", type=int, default=3, help="time each sample this often, keep the fastest"
    )
    args = ap.parse_args()
    p = params.defaults()
    if args.checkpoint:
        model, meta = checkpoints.load_checkpoint(args.checkpoint)
        cfg = checkpoints.model_config_of(meta)
    else:
        torch.manual_seed(0)
        cfg = models.get_config(p["model"])
        model = models.build_model(cfg, 5).eval()
    rs = locate.restorations(len(model.blocks), p["trace_kinds"], args.scopes, p["trace_window"])
    noise = locate.make_noise(
        p["num_ablations"], (model.patch_embed.num_patches, model.embed_dim), 1.0, 0
    )
    imgs = np.random.default_rng(0).integers(0, 255, (args.samples, 28, 28, 3), dtype=np.uint8)
    t_fast = t_ref = 0.0
    diff = 0.0
    for i in range(args.samples):
        x = models.preprocess(imgs[i : i + 1], cfg)
        best_fast = best_ref = float("inf")
        for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
            t0 = time.perf_counter()
            fast = locate.trace_sample(model, x, rs, noise, p["trace_max_rows"])
            best_fast = min(best_fast, time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = locate.trace_reference(model, x, rs, noise)
            best_ref = min(best_ref, time.perf_counter() - t0)
        t_fast += best_fast
        t_ref += best_ref
        diff = max(
            diff,
            float((fast["restored"] - ref["restored"]).abs().max()),
            float((fast["corrupted"] - ref["corrupted"]).abs().max()),
        )
    n = args.samples
    print(
        json.dumps(
            {
                "model": cfg.name,
                "restorations": len(rs),
                "noisy_copies": p["num_ablations"],
                "threads": torch.get_num_threads(),
                "batched_s_per_sample": round(t_fast / n, 3),
                "reference_s_per_sample": round(t_ref / n, 3),
                "speedup": round(t_ref / t_fast, 1),
                "max_abs_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
