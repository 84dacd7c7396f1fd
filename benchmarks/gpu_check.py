"""The GPU checks of issues 2 and 4, as one script for a session that is lent a GPU.

    python benchmarks/gpu_check.py                  # on the GPU machine (about 2-4 minutes)
    python benchmarks/gpu_check.py --max-train 64 --device cpu   # a smoke run anywhere

1. Issue 2: one epoch of ``vit_base_patch16_224`` at 224 on RetinaMNIST (the 28x28 file, resized by
   the shared preprocessing; from scratch, since the machine reaches no weight hub) with bf16
   autocast: images/s of training and of inference.
2. Issue 4: statistics (500 FT-Train images, 3 layers, 3072-wide keys) and AlphaEdit edit time for
   ``max_edits`` errors on the last three layers.
Prints one JSON line per check. Writes nothing outside a temporary folder.
"""

import argparse
import json
import tempfile
import time

import torch

from vitedit import datasets, editors, evaluation, models, params, selection, splits, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--max-train", type=int, default=None, help="cap FT-Train (smoke runs on the CPU)"
    )
    ap.add_argument("--data-path", default=None)
    args = ap.parse_args()
    p = params.resolve(
        {
            "model": "vit_base_patch16_224",
            "pretrained": False,
            "epochs": 1,
            "batch_size": 64,
            "lr": 1e-4,
            "progress": False,
            "device": args.device,
            "data_path": args.data_path,
        }
    )
    device = models.resolve_device(p["device"])
    data = datasets.load(p, log=lambda *a: None)
    split = splits.make_split(data, p["ft_train_ratio"], p["seed"])
    if args.max_train:  # smoke runs: small sets everywhere
        for name, n in (
            ("ft_train", args.max_train),
            ("ft_val", args.max_train // 4 or 1),
            ("edit_discovery", args.max_train // 2 or 1),
            ("test", args.max_train // 2 or 1),
        ):
            split.indices[name] = split.indices[name][:n]
        p["max_edits"] = 2
    cfg = models.get_config(p["model"])
    with tempfile.TemporaryDirectory() as tmp:
        p["checkpoint_dir"] = tmp
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = train.fit(p, data, split, progress=False, log=lambda *a: None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        n = len(split.indices["ft_train"])
        t1 = time.perf_counter()
        imgs = split.images(data, "test")
        runner = models.Runner(cfg, p["eval_batch_size"], device)
        runner.logits(r.model, imgs)
        infer = time.perf_counter() - t1
        print(
            json.dumps(
                {
                    "check": "train_vit_base_224_one_epoch",
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "train_images": n,
                    "epoch_seconds": round(float(r.history.seconds.iloc[0]), 2),
                    "train_images_per_s": round(n / float(r.history.seconds.iloc[0]), 1),
                    "fit_seconds_incl_val": round(total, 2),
                    "inference_images_per_s": round(len(imgs) / infer, 1),
                }
            ),
            flush=True,
        )
        model = r.model.to(device)
        ev = evaluation.Evaluator.from_params(p, data, split, runner)
        y, pred, _ = evaluation.predictions(ev, model, "edit_discovery")
        errors = selection.select_errors(y, pred, p["max_edits"])
        pos = editors.stats_positions(
            len(split.indices["ft_train"]), p["projection_samples"], p["seed"]
        )
        es = editors.edit_data(data, split, pos, errors)
        layers = list(range(len(model.blocks) - 3, len(model.blocks)))
        # the study's AlphaEdit settings (the schema's defaults), statistics cached in tmp
        cache = editors.StatsCache(tmp, {"gpu_check": True})
        ed = editors.build("alphaedit", p, layers=layers, stats_cache=cache)
        first = ed.edit(model, runner, es)  # computes the statistics
        second = ed.edit(model, runner, es)  # finds them cached
        print(
            json.dumps(
                {
                    "check": "alphaedit_vit_base_224",
                    "device": str(device),
                    "layers": layers,
                    "key_dim": model.blocks[-1].mlp.fc2.in_features,
                    "n_edits": int(len(errors)),
                    "stats_samples": int(len(pos)),
                    "stats_seconds": round(first.info["stats_seconds"], 2),
                    "edit_seconds_cached_stats": round(second.info["edit_seconds"], 2),
                    "fix_rate": float(second.log.fixed.mean()) if len(second.log) else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
