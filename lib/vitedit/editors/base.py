"""What every editor shares: its input (:class:`EditData`), its output (:class:`EditResult`), the
per-sample edit log, and the :class:`Editor` interface.

An editor is built by the method registry (:func:`vitedit.methods.Method.build`) from a run's
parameters under their schema names, so the schema (:mod:`vitedit.params`) is the only source of
its settings and the registry the only source of its name. ``edit(model, runner, data)`` never
modifies ``model``: it edits a deep copy and returns it with a log and an ``info`` dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..models import Runner

LOG_COLUMNS = [
    "sample",
    "official_index",
    "true_label",
    "pred_before",
    "pred_after",
    "p_true_before",
    "p_true_after",
    "fixed",
    "batch",
]


class EditError(ValueError):
    pass


@dataclass
class EditData:
    """What every editor receives. Positions let evaluation tell statistics samples from held-out
    ones."""

    stats_images: np.ndarray  # FT-Train images that build the statistics (projection, Fisher, ...)
    stats_positions: np.ndarray  # their positions in FT-Train
    images: np.ndarray  # errors to fix (Edit-Discovery images)
    labels: np.ndarray  # their true labels
    positions: np.ndarray  # their positions in Edit-Discovery
    official_index: np.ndarray | None = None  # their positions in the official train split
    heldout_images: np.ndarray | None = None  # FT-Train images outside the statistics
    # the Edit-Discovery samples not edited (never trained on: near the boundary, as Test's are),
    # for the editors that keep them at the model's own decisions (head_anchored, head_refit)
    anchor_images: np.ndarray | None = None
    anchor_positions: np.ndarray | None = None
    # their true labels: read only by head_dfr (every labelled Edit-Discovery sample); the others
    # never look at them (a test shuffles them and gets the same edit)
    anchor_labels: np.ndarray | None = None

    @property
    def targets(self) -> torch.Tensor:
        """The errors' true labels as a tensor (int64, CPU)."""
        return torch.as_tensor(np.asarray(self.labels, dtype=np.int64))


@dataclass
class EditResult:
    model: torch.nn.Module
    log: pd.DataFrame
    info: dict = field(default_factory=dict)


class Editor:
    """The interface of every editor and baseline. ``name`` is set by the registry when it builds
    the editor (several methods may share one class: the P = I ablation is AlphaEdit's class)."""

    name: str | None = None

    def edit(self, model, runner: Runner, data: EditData) -> EditResult:
        raise NotImplementedError

    def start(self, data: EditData) -> dict:
        """The ``info`` every result records."""
        if not self.name:
            raise EditError(
                f"{type(self).__name__} has no method name: build editors through the registry "
                f"(vitedit.editors.build or vitedit.methods.get(name).build)"
            )
        return {
            "method": self.name,
            "n_edits": int(len(data.labels)),
            "stats_samples": int(len(data.stats_images)),
        }


def unchanged(model, info: dict) -> EditResult:
    """The result when there is no error to edit: the model as it was."""
    info.update(
        {"edit_seconds": 0.0, "stats_seconds": 0.0, "message": "no errors to edit: model unchanged"}
    )
    return EditResult(model, pd.DataFrame(columns=LOG_COLUMNS), info)


def edit_log(
    pb: torch.Tensor, pa: torch.Tensor, data: EditData, batch_of: np.ndarray | None = None
) -> pd.DataFrame:
    """Per edited sample: prediction and true-class probability before (``pb``) and after (``pa``)."""
    y = data.targets
    n = len(y)
    return pd.DataFrame(
        {
            "sample": np.asarray(data.positions, dtype=int),
            "official_index": np.asarray(
                data.official_index if data.official_index is not None else data.positions,
                dtype=int,
            ),
            "true_label": y.numpy(),
            "pred_before": pb.argmax(1).numpy() if n else [],
            "pred_after": pa.argmax(1).numpy() if n else [],
            "p_true_before": pb[torch.arange(n), y].numpy() if n else [],
            "p_true_after": pa[torch.arange(n), y].numpy() if n else [],
            "fixed": (pa.argmax(1) == y).numpy() if n else [],
            "batch": batch_of if batch_of is not None else np.zeros(n, dtype=int),
        },
        columns=LOG_COLUMNS,
    )


# every edit keeps at least this share of FT-Train out of its statistics: the held-out regression
# (and the held-out preservation error) must always be measurable; a report warns below HELDOUT_WARN
HELDOUT_MIN_SHARE = 0.2


def stats_positions(n_ft_train: int, samples: int | str, seed: int) -> np.ndarray:
    """Which FT-Train samples build the statistics: a seeded random subset of ``samples`` (``all``:
    every one), capped so that at least :data:`HELDOUT_MIN_SHARE` of FT-Train (and one sample)
    stays held out for measuring regression."""
    cap = n_ft_train - max(1, int(np.ceil(HELDOUT_MIN_SHARE * n_ft_train)))
    want = cap if samples == "all" else min(int(samples), cap)
    if want <= 0:
        return np.arange(0)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_ft_train, size=want, replace=False))


def edit_data(
    data,
    split,
    ft_positions_for_stats: np.ndarray,
    error_positions: np.ndarray,
    heldout_keys: int = 500,
    anchor_positions: np.ndarray | None = None,
) -> EditData:
    """The editors' input from the 4-set protocol: statistics from FT-Train, errors from
    Edit-Discovery, up to ``heldout_keys`` held-out FT-Train images (preservation error) and the
    Edit-Discovery samples at ``anchor_positions`` (the stages: every one not edited)."""
    n_ft = len(split.indices["ft_train"])
    ed_labels = split.labels(data, "edit_discovery")
    heldout = np.setdiff1d(np.arange(n_ft), ft_positions_for_stats)[:heldout_keys]
    anchors = None if anchor_positions is None else np.asarray(anchor_positions, dtype=int)
    return EditData(  # only the images it needs are copied (never the whole of FT-Train)
        stats_images=np.asarray(
            split.view(data, "ft_train", np.asarray(ft_positions_for_stats, dtype=int))
        ),
        stats_positions=np.asarray(ft_positions_for_stats),
        images=np.asarray(
            split.view(data, "edit_discovery", np.asarray(error_positions, dtype=int))
        ),
        labels=ed_labels[error_positions],
        positions=np.asarray(error_positions),
        official_index=split.indices["edit_discovery"][error_positions],
        heldout_images=np.asarray(split.view(data, "ft_train", heldout)),
        anchor_images=None
        if anchors is None
        else np.asarray(split.view(data, "edit_discovery", anchors)),
        anchor_positions=anchors,
        anchor_labels=None if anchors is None else ed_labels[anchors],
    )
