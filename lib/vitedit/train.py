"""Fine-tuning on FT-Train with early stopping on FT-Val, into a content-addressed checkpoint
(:mod:`vitedit.checkpoints`: its name encodes everything that determined its weights)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import checkpoints, models, paths, threads
from .checkpoints import (
    CHECKPOINT_REF,
    CheckpointError,
    canonical,
    checkpoint_fields,
    checkpoint_path,
    file_lock,
    load_checkpoint,
    read_torch,
    sha256_file,
)
from .datasets import Data
from .progress import bar as progress_bar
from .splits import Split


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); no checkpoint is written."""


@dataclass
class TrainResult:
    model: torch.nn.Module  # holds the selected (best FT-Val) weights
    history: pd.DataFrame
    checkpoint: Path
    meta: dict
    reused: bool


# --------------------------------------------------------------------------- pieces
def lr_lambda(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 0; valid for any number of steps >= 1."""
    warm = int(round(warmup_frac * total_steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        span = max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))

    return f


def shift_step(h: int) -> int:
    """The largest shift, in pixels, of the training's reflected shifts of an image ``h`` high."""
    return max(1, h // 14)


def augment(x: torch.Tensor, g: torch.Generator, flips: bool = True) -> torch.Tensor:
    """Random flips, 90-degree rotations (unless ``flips`` is false: orientation-dependent classes)
    and small reflected shifts, per sample."""
    b, _, h, w = x.shape
    if not flips:
        pad = shift_step(h)
        out = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
        return out[:, :, dy : dy + h, dx : dx + w]
    flip_h = torch.rand(b, generator=g) < 0.5
    flip_v = torch.rand(b, generator=g) < 0.5
    rot = torch.randint(0, 4, (b,), generator=g)
    x = torch.where(flip_h.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    x = torch.where(flip_v.view(-1, 1, 1, 1).to(x.device), x.flip(2), x)
    out = x.clone()
    for k in range(1, 4):
        m = (rot == k).to(x.device)
        if m.any() and h == w:
            out[m] = torch.rot90(x[m], k, (2, 3))
    pad = shift_step(h)
    out = F.pad(out, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    return out[:, :, dy : dy + h, dx : dx + w]


def evaluate(model, images, labels, cfg, batch_size, device, progress=False, desc="eval") -> dict:
    logits = models.predict_logits(model, images, cfg, batch_size, device, progress, desc)
    y = torch.as_tensor(np.asarray(labels))
    if len(y) == 0:
        return {"n": 0, "acc": float("nan"), "loss": float("nan")}
    return {
        "n": int(len(y)),
        "acc": float((logits.argmax(1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
    }


def improved(val: dict, best: dict | None, min_loss_delta: float = 1e-4) -> bool:
    """Higher FT-Val accuracy, or equal accuracy with a clearly lower FT-Val loss."""
    if best is None:
        return True
    if val["acc"] != best["val_acc"]:
        return val["acc"] > best["val_acc"]
    return val["loss"] < best["val_loss"] - min_loss_delta


# --------------------------------------------------------------------------- training
def fit(
    params: Mapping[str, Any],
    data: Data,
    split: Split,
    progress: bool = True,
    on_batch: Callable[[np.ndarray], None] | None = None,
    log=print,
) -> TrainResult:
    """Train (or reuse) the checkpoint that ``params`` determine. Only FT-Train reaches a step.

    ``on_batch`` receives the official-train positions of every training batch (for audits).
    """
    device = models.resolve_device(params.get("device", "auto"))
    threads.apply(params.get("num_threads"))
    fields = checkpoint_fields(params, data, split, device)
    ckpt = checkpoint_path(params, fields)
    if (
        ckpt.is_file()
    ):  # written atomically: a finished checkpoint is read without the lock (read-only stores)
        return _reuse(ckpt, fields, device, log)
    with file_lock(ckpt):
        if ckpt.is_file():  # another process trained it while this one waited
            return _reuse(ckpt, fields, device, log)
        return _train(
            params,
            data,
            split,
            fields,
            ckpt,
            device=device,
            progress=progress,
            on_batch=on_batch,
            log=log,
        )


def _reuse(ckpt: Path, fields: dict, device, log) -> TrainResult:
    model, meta = load_checkpoint(ckpt, device)
    if canonical(meta["fields"]) != fields:
        raise CheckpointError(
            f"{ckpt} was trained under other settings than its name says; delete it"
        )
    log(f"reusing checkpoint {ckpt} (training skipped)")
    return TrainResult(model, pd.DataFrame(meta["history"]), ckpt, meta, True)


def _train(params, data, split, fields, ckpt, *, device, progress, on_batch, log) -> TrainResult:
    cfg = models.get_config(params["model"])
    seed = params["seed"]
    epochs, bs = params["epochs"], params["batch_size"]
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    model = models.build_model(
        cfg,
        data.info.n_classes,
        params.get("pretrained"),
        params.get("weights_path"),
        params["drop_path"],
    ).to(device)
    train_pos = split.indices["ft_train"]
    train_images, train_labels = data.images["train"], data.labels["train"]
    val_images, val_labels = split.images(data, "ft_val"), split.labels(data, "ft_val")
    n = len(train_pos)
    steps_per_epoch = math.ceil(n / bs)
    opt = torch.optim.AdamW(
        model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(epochs * steps_per_epoch, params["warmup_frac"])
    )
    g = torch.Generator().manual_seed(seed)
    pin = params.get("pin_memory")
    pin = device.type == "cuda" if pin is None else (pin and device.type == "cuda")
    use_amp = checkpoints.precision(params, device) == "bf16"
    restore_attention = (  # the fused CPU attention's bf16 backward is ~7x slower than fp32's
        models.use_math_attention(model) if use_amp and device.type != "cuda" else None
    )
    resume_file = ckpt.with_suffix(".resume.pt")
    state = {"epoch": 0, "history": [], "best": None, "bad_epochs": 0}
    if params.get("resume") and resume_file.is_file():
        r = read_torch(resume_file, "resume file", "delete it to train from the start", device)
        if canonical(r["fields"]) == fields:
            model.load_state_dict(r["model"])
            opt.load_state_dict(r["opt"])
            sched.load_state_dict(r["sched"])
            g.set_state(r["gen"])
            torch.set_rng_state(r["torch_rng"])
            state = r["state"]
            log(f"resuming {ckpt.name} after epoch {state['epoch']}")
    elif params.get("resume"):
        log(
            f"resume requested but no interrupted run of {ckpt.name} exists; training from the start"
        )

    bar = progress_bar(
        desc=f"train {ckpt.stem[:40]} epoch",
        total=epochs,
        initial=state["epoch"],
        disable=not progress,
        each_step=True,
    )
    for epoch in range(state["epoch"], epochs):
        if state["bad_epochs"] > params["patience"] > 0:
            break
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=g).numpy()
        tot_loss, tot_correct = 0.0, 0
        for sl in models.iter_batches(n, bs):
            pos = train_pos[perm[sl]]
            if on_batch is not None:
                on_batch(pos)
            x = models.preprocess(train_images[pos], cfg, device, pin)
            if params["augment"]:
                x = augment(x, g, params.get("augment_flips", True))
            y = torch.as_tensor(train_labels[pos]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=params["label_smoothing"])
            if not torch.isfinite(loss.detach()):
                raise TrainingError(
                    f"the training loss is not finite ({loss.item()}) at epoch {epoch + 1}; no "
                    f"checkpoint is written. Check the data for NaN/inf values and the learning rate "
                    f"(lr = {params['lr']})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(pos)
            tot_correct += int((logits.argmax(1) == y).sum())
        val = evaluate(model, val_images, val_labels, cfg, params["eval_batch_size"], device)
        if not math.isfinite(val["loss"]):
            raise TrainingError(
                f"the FT-Val loss is not finite ({val['loss']}) after epoch {epoch + 1}; no "
                f"checkpoint is written. Check the FT-Val images for NaN/inf values"
            )
        row = {
            "epoch": epoch + 1,
            "train_loss": tot_loss / n,
            "train_acc": tot_correct / n,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        state["history"].append(row)
        best = state["best"]
        if improved(val, best):
            state["best"] = {
                "epoch": epoch + 1,
                "val_acc": val["acc"],
                "val_loss": val["loss"],
                "state_dict": copy.deepcopy(
                    {k: v.detach().cpu() for k, v in model.state_dict().items()}
                ),
            }
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        models.save_atomic(
            {
                "fields": fields,
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "gen": g.get_state(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
            },
            resume_file,
        )
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val['acc']:.3f}")
        bar.update(1)
    bar.close()
    best = state["best"]
    if restore_attention is not None:
        restore_attention()  # the model is evaluated as every other: fp32, its own attention
    model.load_state_dict(best["state_dict"])
    model.eval()
    meta = {
        "format": 1,
        "fields": fields,
        "num_classes": data.info.n_classes,
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "best_val_loss": best["val_loss"],
        "history": state["history"],
        "epochs_run": state["epoch"],
        "stopped_early": state["epoch"] < epochs,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    models.save_atomic(dict(meta, state_dict=best["state_dict"]), ckpt)
    resume_file.unlink(missing_ok=True)
    log(f"saved checkpoint {ckpt} (best FT-Val acc {best['val_acc']:.4f} at epoch {best['epoch']})")
    return TrainResult(
        model,
        pd.DataFrame(state["history"]),
        ckpt,
        json.loads(json.dumps(meta, default=str)),
        False,
    )


# --------------------------------------------------------------------------- run references
def record_in_run(run_dir: Path, result: TrainResult, split: Split) -> dict:
    """Write ``checkpoint.json``: the exact checkpoint this run trained (path and sha256)."""
    ref = {
        "path": str(result.checkpoint),
        "sha256": sha256_file(result.checkpoint),
        "split": split.digest,
        "fields": result.meta["fields"],
        "best_epoch": result.meta["best_epoch"],
        "best_val_acc": result.meta["best_val_acc"],
        "reused": result.reused,
    }
    paths.atomic_write_text(Path(run_dir) / CHECKPOINT_REF, paths.json_text(ref))
    return ref
