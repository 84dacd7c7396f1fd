"""The two baselines, through the editors' interface (``edit(model, runner, EditData) -> EditResult``).

- :class:`RetrainBaseline` (baseline 1): FT-Train plus the error samples, trained from the same
  initialisation as the original model (the same seed's scratch init or the same pretrained
  weights) with the same recipe and, by default, the same epochs (``retrain_epochs``); the epoch is
  selected on FT-Val. A reused checkpoint reports the training time recorded when it was trained.
- :class:`FinetuneErrorsBaseline` (baseline 2): continue from the fine-tuned model on the error
  samples only, at ``baseline_lr`` for ``baseline_epochs``.
- :class:`FinetuneReplayBaseline`: baseline 2 given what every editor is given, the statistics
  samples: each step adds a batch of them at the model's own predictions (replay), weighted by
  ``replay_weight``, to the errors' loss. The fair fine-tuning baseline.
- :class:`FinetuneLabelledBaseline` (issue 30): the replay fine-tune on every labelled
  Edit-Discovery sample, the errors and the samples not edited at their true labels.

Fine-tuning runs at a constant learning rate, so its first ``E`` epochs are the same whatever
``baseline_epochs`` is: given a ``stats_cache`` (the in-process benchmark's, one per checkpoint),
a grid point of more epochs continues from the state the point of fewer epochs left (weights,
optimiser, generators), bit for bit the same weights as a fresh run
(``tests/test_baselines.py``); its ``edit_seconds`` still count every epoch.

Their keyword names are the study's parameter names (registered in :mod:`vitedit.methods`).
A baseline with nothing to train on is *skipped* with its reason (``info["status"]``), never
reported as a success with empty results.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import paths, train
from .datasets import Data
from .editors.base import LOG_COLUMNS, EditData, EditError, Editor, EditResult, edit_log
from .models import Runner
from .splits import Split


def _skipped(model, name: str | None, reason: str) -> EditResult:
    return EditResult(
        copy.deepcopy(model),
        pd.DataFrame(columns=LOG_COLUMNS),
        {
            "method": name,
            "status": "skipped",
            "reason": reason,
            "n_edits": 0,
            "edit_seconds": None,
            "stats_seconds": None,
        },
    )


def with_errors_in_training(split: Split, error_official_index: np.ndarray) -> Split:
    """A split whose FT-Train also holds the given official-train positions (moved from Edit-Discovery)."""
    ft = np.union1d(split.indices["ft_train"], error_official_index)
    ed = np.setdiff1d(split.indices["edit_discovery"], error_official_index)
    idx = dict(split.indices, ft_train=ft.astype(np.int64), edit_discovery=ed.astype(np.int64))
    return Split(idx, split.seed, split.ft_train_ratio, split.dataset)


class RetrainBaseline(Editor):
    def __init__(
        self,
        *,
        params: Mapping[str, Any],
        data: Data,
        split: Split,
        retrain_epochs: int | None,
        progress: bool,
    ):
        # the original model's recipe; only the number of epochs may differ (None: the same)
        epochs = params["epochs"] if retrain_epochs is None else retrain_epochs
        self.params = dict(params, epochs=epochs, resume=False)
        self.data, self.split, self.progress = data, split, progress

    def edit(self, model, runner: Runner, data: EditData) -> EditResult:
        if len(data.labels) == 0:
            return _skipped(model, self.name, "no errors to add to the training set")
        if data.official_index is None:
            raise ValueError(
                "RetrainBaseline needs the errors' official-train positions (EditData.official_index)"
            )
        info = self.start(data)
        p_before = runner.probs(model, data.images)
        split = with_errors_in_training(self.split, np.asarray(data.official_index))
        t0 = time.perf_counter()
        result = train.fit(
            self.params, self.data, split, progress=self.progress, log=lambda *a: None
        )
        seconds = time.perf_counter() - t0
        if result.reused:  # the time it took to train, recorded then (not the time to load it)
            seconds = float(sum(row.get("seconds", np.nan) for row in result.meta["history"]))
        log = edit_log(p_before, runner.probs(result.model, data.images), data)
        log["edit_seconds"] = seconds
        return EditResult(
            result.model.to(runner.device).eval(),
            log,
            {
                "method": info["method"],
                "status": "ok",
                "n_edits": info["n_edits"],
                "edit_seconds": seconds,
                "stats_seconds": 0.0,
                "epochs": self.params["epochs"],
                "checkpoint": str(result.checkpoint),
                "reused": result.reused,
                "best_epoch": result.meta["best_epoch"],
                "n_train": int(len(split.indices["ft_train"])),
            },
        )


class FinetuneErrorsBaseline(Editor):
    batch_size = 32  # error samples per step (at most max_edits of them)
    replay_batch_size = 64  # statistics samples per step (the replay baseline)
    weight_decay = 0.0
    replay_weight = 0.0  # baseline 2 fine-tunes on the errors alone

    max_resume_params = 20_000_000  # larger models keep no fine-tuning state in memory

    def __init__(self, *, baseline_lr: float, baseline_epochs: int, seed: int, stats_cache):
        self.baseline_lr, self.baseline_epochs, self.seed = baseline_lr, baseline_epochs, seed
        self.stats_cache = stats_cache

    def train_set(self, data: EditData) -> tuple[np.ndarray, np.ndarray]:
        """The samples fine-tuned on and their labels: the errors at their true labels."""
        return data.images, np.asarray(data.labels, dtype=np.int64)

    def _resume_key(self, data: EditData) -> tuple | None:
        """What the fine-tuning state depends on besides the epochs (None: not kept)."""
        if self.stats_cache is None:
            return None
        digest = [
            hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
            for a in (*self.train_set(data), data.stats_images)
            if a is not None
        ]
        hyper = (self.baseline_lr, self.replay_weight, self.seed, self.weight_decay)
        return ("finetune_state", type(self).__name__, *hyper, self.batch_size, *digest)

    def _replay(self, tuned, runner: Runner, data: EditData):
        """Statistics samples and the labels the model gives them now (None: no replay)."""
        if not self.replay_weight or data.stats_images is None or not len(data.stats_images):
            return None
        return data.stats_images, runner.probs(tuned, data.stats_images).argmax(1)

    def edit(self, model, runner: Runner, data: EditData) -> EditResult:
        if len(data.labels) == 0:
            return _skipped(model, self.name, "no error samples to fine-tune on")
        info = self.start(data)
        device = runner.device
        tuned = copy.deepcopy(model).to(device)
        p_before = runner.probs(tuned, data.images)
        # CPU only: on CUDA drop_path draws from the CUDA generator, which the state does not keep
        key = self._resume_key(data) if device.type == "cpu" else None
        kept = self.stats_cache.targets.get(key) if key else None
        if kept is not None and kept["epochs"] > self.baseline_epochs:
            kept = None  # a state past this point's epochs: start afresh
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.AdamW(
            tuned.parameters(), lr=self.baseline_lr, weight_decay=self.weight_decay
        )
        x_all, y_all = self.train_set(data)
        t0 = time.perf_counter()
        if kept is None:
            replay = self._replay(tuned, runner, data)
            order = torch.randperm(len(replay[1]), generator=g).numpy() if replay else None
            step, done, earlier = 0, 0, 0.0
        else:  # where the point of fewer epochs stopped
            tuned.load_state_dict(kept["model"])
            opt.load_state_dict(kept["opt"])
            g.set_state(kept["gen"])
            torch.set_rng_state(kept["rng"])
            replay, order, step = kept["replay"], kept["order"], kept["step"]
            done, earlier = kept["epochs"], kept["seconds"]
        tuned.train()
        for _ in range(done, self.baseline_epochs):
            perm = torch.randperm(len(y_all), generator=g).numpy()
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start : start + self.batch_size]
                x = runner.inputs(x_all[idx])
                loss = F.cross_entropy(tuned(x).float(), torch.as_tensor(y_all[idx], device=device))
                if replay is not None:  # the next replay batch, cycling through a fixed order
                    r = order[np.arange(step, step + self.replay_batch_size) % len(order)]
                    target = torch.as_tensor(replay[1][r], device=device)
                    out = tuned(runner.inputs(replay[0][r])).float()
                    loss = loss + self.replay_weight * F.cross_entropy(out, target)
                step += self.replay_batch_size
                opt.zero_grad()
                loss.backward()
                opt.step()
        seconds = earlier + time.perf_counter() - t0  # every epoch's time, resumed or not
        if key and sum(p.numel() for p in tuned.parameters()) <= self.max_resume_params:
            self.stats_cache.targets[key] = {  # one state per key: the latest point's
                "epochs": self.baseline_epochs,
                "model": copy.deepcopy(tuned.state_dict()),
                "opt": copy.deepcopy(opt.state_dict()),
                "gen": g.get_state(),
                "rng": torch.get_rng_state(),
                "replay": replay,
                "order": order,
                "step": step,
                "seconds": seconds,
            }
        tuned.eval()
        log = edit_log(p_before, runner.probs(tuned, data.images), data)
        log["edit_seconds"] = seconds
        return EditResult(
            tuned,
            log,
            {
                "method": info["method"],
                "status": "ok",
                "n_edits": info["n_edits"],
                "edit_seconds": seconds,
                "stats_seconds": 0.0,
                "epochs": self.baseline_epochs,
                "lr": self.baseline_lr,
                "replay_weight": self.replay_weight,
                "replay_samples": 0 if replay is None else int(len(replay[1])),
                "train_samples": int(len(y_all)),
                "resumed_from_epoch": done,
            },
        )


class FinetuneReplayBaseline(FinetuneErrorsBaseline):
    def __init__(
        self,
        *,
        baseline_lr: float,
        baseline_epochs: int,
        seed: int,
        replay_weight: float,
        stats_cache,
    ):
        super().__init__(
            baseline_lr=baseline_lr,
            baseline_epochs=baseline_epochs,
            seed=seed,
            stats_cache=stats_cache,
        )
        self.replay_weight = replay_weight


class FinetuneLabelledBaseline(FinetuneReplayBaseline):
    """Fine-tune on every labelled Edit-Discovery sample (``finetune_labelled``, issue 30): the
    edited errors and the samples not edited, all at their true labels, with the statistics samples
    replayed at the model's own predictions (``replay_weight``; 0: no replay). It reads what
    ``head_dfr`` reads, but moves the features too; which errors are selected changes only their
    order in the training set."""

    def train_set(self, data: EditData) -> tuple[np.ndarray, np.ndarray]:
        if data.anchor_images is None or data.anchor_labels is None:
            raise EditError(
                "finetune_labelled needs the Edit-Discovery samples not edited and their true "
                "labels (EditData.anchor_images, anchor_labels): build the edit set with "
                "vitedit.editors.edit_data(..., anchor_positions=...) and run it through "
                "vitedit.stages.edit.run_method, which hands the labels to a method declaring "
                "reads_anchor_labels"
            )
        if len(data.anchor_labels) != len(data.anchor_images):
            raise EditError(
                f"finetune_labelled: {len(data.anchor_labels)} anchor labels for "
                f"{len(data.anchor_images)} anchor images; give one label per image"
            )
        x = np.concatenate([data.images, data.anchor_images])
        y = np.concatenate([data.labels, data.anchor_labels]).astype(np.int64)
        return x, y


SUMMARY_FILES = {
    "baseline_retrain": "baseline_retrain_summary.csv",
    "baseline_finetune": "baseline_finetune_errors_summary.csv",
    "baseline_finetune_replay": "baseline_finetune_replay_summary.csv",
}


def write_summary(
    run_dir, name: str, metrics: Mapping[str, Any] | None = None, reason: str | None = None
):
    """The original's per-baseline summary CSV: the baseline's metrics with status ``ok``, or status
    ``skipped`` with its reason (never an empty success)."""
    if (metrics is None) == (reason is None):
        raise ValueError("give the baseline's metrics or the reason it was skipped, not both")
    row = (
        {**metrics, "status": "ok"}
        if reason is None
        else {"method": name, "status": "skipped", "reason": reason}
    )
    out = Path(run_dir) / SUMMARY_FILES.get(name, f"{name}_summary.csv")
    paths.atomic_write_text(out, pd.DataFrame([row]).to_csv(index=False))
    return out
