"""Evaluation of a model on the sets of the 4-set protocol.

Every function takes one :class:`Evaluator`: the run's data and split, the :class:`~vitedit.models.Runner`
(preprocessing config, batch size, device), where predictions are cached, and the bootstrap's seed
and size; the models and the positions that differ between calls come as arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .comparison import preservation_columns
from .datasets import Data
from .models import Runner
from .paired import auc, bootstrap_delta_ci, macro_f1, mcnemar_exact, per_class_accuracy
from .predcache import cached_probs, weights_fixed
from .splits import SET_LABEL, SETS, Split
from .statecache import StateCache


@dataclass(frozen=True)
class Evaluator:
    """The sets a run evaluates on and how: data, 4-set split, runner, prediction cache (None: no
    cache), and the bootstrap of Test's paired accuracy change (its seed and resamples).
    ``states`` (the benchmark's in-process path): the base model's hidden states in memory, so
    that a layer edit runs only the blocks from its lowest edited one (identical probabilities,
    :mod:`vitedit.statecache`)."""

    data: Data
    split: Split
    runner: Runner
    cache_dir: Path | None
    seed: int
    n_boot: int
    states: StateCache | None = None

    @classmethod
    def from_params(
        cls, p, data: Data, split: Split, runner: Runner, cache_dir: Path | None = None
    ) -> Evaluator:
        """The evaluator of a run with parameters ``p`` (the bootstrap's seed and resamples)."""
        return cls(data, split, runner, cache_dir, p["seed"], p["bootstrap_samples"])

    def probs(self, model, images) -> np.ndarray:
        """``model``'s probabilities on ``images``, through the prediction cache."""
        if self.states is not None:
            probs = self.states.probs(model, images)
            if probs is not None:
                return probs
        return cached_probs(model, images, self.runner, self.cache_dir)

    def view(self, name: str, positions=None):
        return self.split.view(self.data, name, positions)

    def labels(self, name: str) -> np.ndarray:
        return self.split.labels(self.data, name)


def predictions(
    ev: Evaluator, model, name: str, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, predicted labels, probabilities) of ``model`` on set ``name`` (not cached)."""
    logits = ev.runner.logits(
        model, ev.split.images(ev.data, name), progress=progress, desc=SET_LABEL[name]
    )
    probs = torch.softmax(logits, 1).numpy()
    return ev.labels(name), probs.argmax(1), probs


def set_accuracy_table(ev: Evaluator, model, progress: bool = False, sets=SETS) -> pd.DataFrame:
    """Accuracy, errors and mean true-class probability per set."""
    rows = []
    for name in sets:
        y, pred, probs = predictions(ev, model, name, progress)
        rows.append(
            {
                "set": SET_LABEL[name],
                "n": int(len(y)),
                "accuracy": float((pred == y).mean()) if len(y) else np.nan,
                "errors": int((pred != y).sum()),
                "mean_p_true": float(probs[np.arange(len(y)), y].mean()) if len(y) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def transitions(y: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray) -> dict:
    """Correct/wrong transitions between two models on the same samples.

    stability = share of samples correct before that stay correct; regression_rate = 1 - stability;
    fix_rate = share of samples wrong before that become correct.
    """
    y, b, a = map(np.asarray, (y, pred_before, pred_after))
    cb, ca = b == y, a == y
    n_cb, n_wb = int(cb.sum()), int((~cb).sum())
    return {
        "n": int(len(y)),
        "correct_before": n_cb,
        "wrong_before": n_wb,
        "acc_before": float(cb.mean()) if len(y) else np.nan,
        "acc_after": float(ca.mean()) if len(y) else np.nan,
        "correct_to_wrong": int((cb & ~ca).sum()),
        "wrong_to_correct": int((~cb & ca).sum()),
        "stability": float((cb & ca).sum() / n_cb) if n_cb else np.nan,
        "regression_rate": float((cb & ~ca).sum() / n_cb) if n_cb else np.nan,
        "fix_rate": float((~cb & ca).sum() / n_wb) if n_wb else np.nan,
    }


def fixed_mask(y: np.ndarray, probs_before: np.ndarray, probs_after: np.ndarray) -> str:
    """'y' for each sample wrong before and right after, 'n' for each other sample wrong before,
    in order (samples right before are left out): the errors' outcomes, comparable error by error
    between methods that saw the same errors (letters: a CSV reader keeps them a string)."""
    y = np.asarray(y, dtype=int)
    wrong = probs_before.argmax(1) != y
    return "".join("y" if ok else "n" for ok in (probs_after.argmax(1) == y)[wrong])


def positions_digest(positions: np.ndarray) -> str:
    """A short digest of which samples were edited (equal digests: the same errors)."""
    blob = np.asarray(positions, dtype=np.int64).tobytes()
    return hashlib.sha256(blob).hexdigest()[:12]


def ft_train_positions(ev: Evaluator, stats_positions: np.ndarray) -> dict[str, np.ndarray]:
    """FT-Train positions held out from the editing statistics, and those that built them."""
    n = len(ev.split.indices["ft_train"])
    stats_positions = np.asarray(stats_positions, dtype=int)
    return {"heldout": np.setdiff1d(np.arange(n), stats_positions), "insample": stats_positions}


def set_probs(
    ev: Evaluator, model, stats_positions: np.ndarray, sets=None
) -> dict[str, np.ndarray]:
    """``model``'s probabilities on what the evaluation reads (through the prediction cache):
    Edit-Discovery, FT-Train held out and in-sample, Test and FT-Val (``sets``: some of them)."""
    ft = ft_train_positions(ev, stats_positions)
    images = {
        "edit_discovery": lambda: ev.view("edit_discovery"),
        "ft_train_heldout": lambda: ev.view("ft_train").take(ft["heldout"]),
        "ft_train_insample": lambda: ev.view("ft_train").take(ft["insample"]),
        "test": lambda: ev.view("test"),
        "ft_val": lambda: ev.view("ft_val"),
    }
    with weights_fixed(model):  # the model's weights are read once for every set's cache key
        return {k: ev.probs(model, f()) for k, f in images.items() if sets is None or k in sets}


def ft_train_stability(
    ev: Evaluator, before: dict, after: dict, stats_positions: np.ndarray
) -> dict:
    """Transitions on FT-Train held out from the editing statistics (``heldout_*``) and, labelled
    apart, on the samples that built them (``insample_*``), from the two models' probabilities
    (:func:`set_probs`)."""
    y = ev.labels("ft_train")
    row = {}
    for name, pos in ft_train_positions(ev, stats_positions).items():
        key = f"ft_train_{name}"
        t = transitions(y[pos], before[key].argmax(1), after[key].argmax(1))
        row.update(
            {
                f"{name}_n": t["n"],
                f"{name}_stability": t["stability"],
                f"{name}_regression_rate": t["regression_rate"],
                f"{name}_correct_before": t["correct_before"],
                f"{name}_correct_to_wrong": t["correct_to_wrong"],
                f"{name}_acc_before": t["acc_before"],
                f"{name}_acc_after": t["acc_after"],
            }
        )
    return row


def edit_summary(
    ev: Evaluator, method: str, result, model_before, stats_positions: np.ndarray
) -> dict:
    """Fix rate on the edited errors, and stability on FT-Train held out from the editing statistics
    (the samples that built P / Fisher / ridge are reported apart, labelled in-sample)."""
    sets = ("ft_train_heldout", "ft_train_insample")
    ft = ft_train_stability(
        ev,
        set_probs(ev, model_before, stats_positions, sets),
        set_probs(ev, result.model, stats_positions, sets),
        stats_positions,
    )
    row = {
        "method": method,
        "n_edits": int(len(result.log)),
        "fix_rate": float(result.log["fixed"].mean()) if len(result.log) else np.nan,
    }
    for name in ("heldout", "insample"):
        row.update(
            {f"ft_{name}_{k}": ft[f"{name}_{k}"] for k in ("n", "stability", "regression_rate")}
        )
    row.update(
        {
            "edit_seconds": result.info.get("edit_seconds"),
            "stats_seconds": result.info.get("stats_seconds"),
        }
    )
    row.update(preservation_columns(result.info))
    return row


# --------------------------------------------------------------------------- the 4-level evaluation
def pair_generalisation(
    edited_y: np.ndarray,
    edited_pred: np.ndarray,
    y: np.ndarray,
    pred_before: np.ndarray,
    pred_after: np.ndarray,
) -> dict:
    """Does a fix carry over to the same mistake elsewhere, and at what cost to the classes involved?

    The edited errors' (true, predicted) pairs define the confusions being corrected. On the
    evaluated set (Test): ``same_pair_*`` counts its errors of those pairs and how many the edit
    turned right (``same_pair_fix_rate``, NaN when there are none); ``pair_classes_*`` counts the
    samples of the classes involved (the pairs' true and predicted classes) that were right before
    and how many the edit broke (``pair_classes_regression_rate``). A class-level fix raises the first
    without raising the second.
    """
    y, pb, pa = (np.asarray(a, dtype=int) for a in (y, pred_before, pred_after))
    pairs = {(int(t), int(q)) for t, q in zip(edited_y, edited_pred) if int(t) != int(q)}
    classes = sorted({c for pair in pairs for c in pair})
    same = np.array([(int(t), int(q)) in pairs for t, q in zip(y, pb)], dtype=bool) & (y != pb)
    involved = np.isin(y, classes) & (pb == y)
    fixed = int((same & (pa == y)).sum())
    broken = int((involved & (pa != y)).sum())
    return {
        "edited_pairs": " ".join(f"{t}>{q}" for t, q in sorted(pairs)),
        "same_pair_errors": int(same.sum()),
        "same_pair_wrong_to_correct": fixed,
        "same_pair_fix_rate": fixed / int(same.sum()) if same.any() else float("nan"),
        "pair_classes_correct": int(involved.sum()),
        "pair_classes_correct_to_wrong": broken,
        "pair_classes_regression_rate": broken / int(involved.sum())
        if involved.any()
        else float("nan"),
    }


def four_level(
    ev: Evaluator,
    method: str,
    before,
    after,
    edited_positions: np.ndarray,
    stats_positions: np.ndarray,
) -> dict:
    """The same evaluation for every method: ``before`` is exactly the model the method started from.

    1. edit samples: fix rate;
    2. FT-Train held out from the editing statistics: stability / regression (in-sample apart);
    3. Test: accuracy before/after, delta, transitions, exact McNemar p, bootstrap CI of the delta,
       macro-F1, AUC, per-class accuracy change;
    4. Edit-Discovery without the edited samples (does the fix generalise), and Test errors that
       share an edited sample's (true, predicted) pair;
    5. the selection level, FT-Val: accuracy change, fix and regression rates. A sweep chooses its
       configuration on these (and on levels 1, 2, 4), never on Test.
    Returns ``{"levels": {level: row}, "confusion": (before, after), "per_class": DataFrame}``.
    """
    return levels(
        ev,
        method,
        set_probs(ev, before, stats_positions),
        set_probs(ev, after, stats_positions),
        edited_positions,
        stats_positions,
    )


def levels(
    ev: Evaluator,
    method: str,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    edited_positions: np.ndarray,
    stats_positions: np.ndarray,
) -> dict:
    """:func:`four_level` from the two models' probabilities (:func:`set_probs`): however they
    were computed, every method and grid point is judged by this one function."""
    data = ev.data
    n_cls = data.info.n_classes
    ed_y = ev.labels("edit_discovery")
    edited_positions = np.asarray(edited_positions, dtype=int)
    pb_ed, pa_ed = before["edit_discovery"], after["edit_discovery"]
    out: dict[str, dict] = {}
    t = transitions(
        ed_y[edited_positions], pb_ed[edited_positions].argmax(1), pa_ed[edited_positions].argmax(1)
    )
    out["edit_samples"] = {
        "method": method,
        "total": t["n"],
        "num_fixed": t["wrong_to_correct"],
        "fix_rate": t["fix_rate"],
        "broken": t["correct_to_wrong"],
        # which of the edited errors (in the order edited) this edit fixed, and which errors they
        # are: methods that edited the same errors are compared error by error (vitedit.evidence)
        "fixed_mask": fixed_mask(
            ed_y[edited_positions], pb_ed[edited_positions], pa_ed[edited_positions]
        ),
        "errors_digest": positions_digest(edited_positions),
    }
    out["projection_samples"] = {
        "method": method,
        **ft_train_stability(ev, before, after, stats_positions),
    }
    te_y = ev.labels("test")
    pb, pa = before["test"], after["test"]
    yb, ya = pb.argmax(1), pa.argmax(1)
    out["test_set"] = level_test(ev, method, te_y, pb, pa) | pair_generalisation(
        ed_y[edited_positions], pb_ed[edited_positions].argmax(1), te_y, yb, ya
    )
    rest = np.setdiff1d(np.arange(len(ed_y)), edited_positions)
    tr = transitions(ed_y[rest], pb_ed[rest].argmax(1), pa_ed[rest].argmax(1))
    out["edit_discovery_set"] = {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "wrong_before": tr["wrong_before"],
        "wrong_to_correct": tr["wrong_to_correct"],
        "correct_to_wrong": tr["correct_to_wrong"],
        "fix_rate": tr["fix_rate"],
        "stability": tr["stability"],
        # the held-out errors of the same kind (not edited), one by one: paired comparisons
        "fixed_mask": fixed_mask(ed_y[rest], pb_ed[rest], pa_ed[rest]),
    }
    tr = transitions(ev.labels("ft_val"), before["ft_val"].argmax(1), after["ft_val"].argmax(1))
    out["val_set"] = {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "acc_delta": tr["acc_after"] - tr["acc_before"],
        "correct_before": tr["correct_before"],
        "wrong_to_correct": tr["wrong_to_correct"],
        "correct_to_wrong": tr["correct_to_wrong"],
        "fix_rate": tr["fix_rate"],
        "stability": tr["stability"],
        "regression_rate": tr["regression_rate"],
    }
    # lazy: scikit-learn adds ~1.5 s to each process importing this module (see mcnemar_exact)
    from sklearn.metrics import confusion_matrix

    cm = (
        confusion_matrix(te_y, yb, labels=list(range(n_cls))),
        confusion_matrix(te_y, ya, labels=list(range(n_cls))),
    )
    per_class = pd.DataFrame(
        {
            "method": method,
            "class": range(n_cls),
            "name": list(data.info.label_names),
            "acc_before": per_class_accuracy(te_y, yb, n_cls),
            "acc_after": per_class_accuracy(te_y, ya, n_cls),
        }
    )
    per_class["acc_change"] = per_class.acc_after - per_class.acc_before
    return {"levels": out, "confusion": cm, "per_class": per_class}


def level_test(ev: Evaluator, method: str, y: np.ndarray, pb: np.ndarray, pa: np.ndarray) -> dict:
    """Level 3, Test: accuracy before / after / delta with the bootstrap CI of the paired change,
    transitions, exact McNemar p, macro-F1 and AUC, and the majority class's share."""
    n_cls = ev.data.info.n_classes
    yb, ya = pb.argmax(1), pa.argmax(1)
    tr = transitions(y, yb, ya)
    mc = mcnemar_exact(yb == y, ya == y)
    lo, hi = bootstrap_delta_ci(yb == y, ya == y, ev.n_boot, ev.seed)
    return {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "acc_delta": tr["acc_after"] - tr["acc_before"],
        "delta_ci_low": lo,
        "delta_ci_high": hi,
        "correct_before": tr["correct_before"],
        "correct_to_wrong": tr["correct_to_wrong"],
        "wrong_to_correct": tr["wrong_to_correct"],
        # damage: the share of what was right that the edit broke (acc_delta is net of fixes)
        "regression_rate": tr["regression_rate"],
        "mcnemar_p": mc["p_value"],
        "stability": tr["stability"],
        "f1_macro_before": macro_f1(y, yb, n_cls),
        "f1_macro_after": macro_f1(y, ya, n_cls),
        "auc_before": auc(y, pb),
        "auc_after": auc(y, pa),
        # what always answering the largest Test class scores: an edited model below it is broken
        "majority_share": float(np.bincount(y, minlength=n_cls).max() / max(len(y), 1)),
    }
