"""Which errors are edited: the misclassified Edit-Discovery samples in set order, or those of
one (true, predicted) confusion pair."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SelectionError(ValueError):
    """The errors asked for cannot be selected (e.g. an ``edit_pair`` the model never makes)."""


# --------------------------------------------------------------------------- errors, statistics, selection
def select_errors(
    y_true: np.ndarray, y_pred: np.ndarray, max_samples: int | None, skip: int = 0
) -> np.ndarray:
    """Positions of misclassified samples, in set order, at most ``max_samples`` after the first
    ``skip`` errors (deterministic)."""
    err = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[skip:]
    return err if max_samples is None else err[:max_samples]


def skipped_errors(p) -> int:
    """How many errors in set order come before the ones a run edits and traces: ``max_edits``
    with ``edit_selection: second`` (the cross-fit swap of 'first'), else none."""
    return int(p["max_edits"]) if p.get("edit_selection") == "second" else 0


def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> list[tuple[int, int, int]]:
    """``(true, predicted, count)`` of the errors, most frequent first (ties: lower class ids)."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    err = y != p
    pairs, counts = np.unique(np.stack([y[err], p[err]], 1), axis=0, return_counts=True)
    out = [(int(t), int(q), int(c)) for (t, q), c in zip(pairs.reshape(-1, 2), counts)]
    return sorted(out, key=lambda r: (-r[2], r[0], r[1]))


def check_pair(pair: Sequence[int], n_classes: int | None = None) -> tuple[int, int]:
    """An ``edit_pair``: two different class ids of the dataset (true, predicted)."""
    pair = tuple(int(c) for c in pair)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise SelectionError(
            f"edit_pair must be [true, predicted] with two different class ids, got {list(pair)}"
        )
    if n_classes is not None and not all(0 <= c < n_classes for c in pair):
        raise SelectionError(
            f"edit_pair {list(pair)} names a class outside 0..{n_classes - 1} of this dataset"
        )
    return pair  # type: ignore[return-value]


def select_pair_errors(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    max_samples: int | None,
    pair: Sequence[int] | None = None,
    n_classes: int | None = None,
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The errors of one (true, predicted) pair, in set order, at most ``max_samples``: ``pair``,
    or the most frequent pair (deterministic). Returns the positions and the pair."""
    if pair is not None:
        pair = check_pair(pair, n_classes)
    else:
        pairs = confusion_pairs(y_true, y_pred)
        if not pairs:
            return np.array([], dtype=int), None
        pair = pairs[0][:2]
    y, p = np.asarray(y_true), np.asarray(y_pred)
    err = np.flatnonzero((y == pair[0]) & (p == pair[1]))
    if not len(err):
        common = ", ".join(f"[{t}, {q}] ({c})" for t, q, c in confusion_pairs(y, p)[:5])
        raise SelectionError(
            f"edit_pair {list(pair)}: the model makes no such error on Edit-Discovery; its most "
            f"frequent pairs are {common or 'none (no errors)'}; choose one of them or leave "
            f"edit_pair empty for the most frequent"
        )
    return (err if max_samples is None else err[:max_samples]), pair
