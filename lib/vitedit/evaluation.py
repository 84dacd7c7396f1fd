"""Evaluation of a model on the sets of the 4-set protocol."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

from . import models
from .budget import t_half_width  # noqa: F401  (one CI for seeds, tracing and budgets)
from .columns import LEVELS, SELECTION_METRICS  # noqa: F401  (re-exported)
from .datasets import Data
from .paths import atomic_write_bytes, atomic_write_text
from .splits import SET_LABEL, SETS, Split


def predictions(
    model,
    data: Data,
    split: Split,
    name: str,
    cfg: models.ModelConfig,
    batch_size: int = 256,
    device="cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, predicted labels, probabilities) of ``model`` on set ``name``."""
    logits = models.predict_logits(
        model, split.images(data, name), cfg, batch_size, device, progress, desc=SET_LABEL[name]
    )
    probs = torch.softmax(logits, 1).numpy()
    return split.labels(data, name), probs.argmax(1), probs


def set_accuracy_table(
    model,
    data: Data,
    split: Split,
    cfg: models.ModelConfig,
    batch_size: int = 256,
    device="cpu",
    progress: bool = False,
    sets=SETS,
) -> pd.DataFrame:
    """Accuracy, errors and mean true-class probability per set."""
    rows = []
    for name in sets:
        y, pred, probs = predictions(model, data, split, name, cfg, batch_size, device, progress)
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
        "acc_before": float(cb.mean()) if len(y) else np.nan,
        "acc_after": float(ca.mean()) if len(y) else np.nan,
        "correct_to_wrong": int((cb & ~ca).sum()),
        "wrong_to_correct": int((~cb & ca).sum()),
        "stability": float((cb & ca).sum() / n_cb) if n_cb else np.nan,
        "regression_rate": float((cb & ~ca).sum() / n_cb) if n_cb else np.nan,
        "fix_rate": float((~cb & ca).sum() / n_wb) if n_wb else np.nan,
    }


def ft_train_stability(
    before,
    after,
    data: Data,
    split: Split,
    stats_positions: np.ndarray,
    cfg: models.ModelConfig,
    batch_size: int = 256,
    device="cpu",
    cache_dir: Path | None = None,
) -> dict:
    """Transitions on FT-Train held out from the editing statistics (``heldout_*``) and, labelled
    apart, on the samples that built them (``insample_*``)."""
    imgs, y = split.view(data, "ft_train"), split.labels(data, "ft_train")
    stats_positions = np.asarray(stats_positions, dtype=int)
    row = {}
    for name, pos in (
        ("heldout", np.setdiff1d(np.arange(len(y)), stats_positions)),
        ("insample", stats_positions),
    ):
        pb = _np_probs(before, imgs.take(pos), cfg, batch_size, device, cache_dir).argmax(1)
        pa = _np_probs(after, imgs.take(pos), cfg, batch_size, device, cache_dir).argmax(1)
        t = transitions(y[pos], pb, pa)
        row.update(
            {
                f"{name}_n": t["n"],
                f"{name}_stability": t["stability"],
                f"{name}_regression_rate": t["regression_rate"],
                f"{name}_acc_before": t["acc_before"],
                f"{name}_acc_after": t["acc_after"],
            }
        )
    return row


def edit_summary(
    method: str,
    result,
    model_before,
    data: Data,
    split: Split,
    stats_positions: np.ndarray,
    cfg: models.ModelConfig,
    batch_size: int = 256,
    device="cpu",
    cache_dir: Path | None = None,
) -> dict:
    """Fix rate on the edited errors, and stability on FT-Train held out from the editing statistics
    (the samples that built P / Fisher / ridge are reported apart, labelled in-sample)."""
    ft = ft_train_stability(
        model_before, result.model, data, split, stats_positions, cfg, batch_size, device, cache_dir
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


def preservation_columns(info: dict) -> dict:
    """The worst edited layer's median ‖ΔW k‖ / ‖W k‖, in-sample and held out (NaN for methods that
    do not edit a projection), and whether it exceeds the documented bound."""
    pres = info.get("preservation") or {}
    return {
        "preservation_insample": pres.get("insample_median_max", np.nan),
        "preservation_heldout": pres.get("heldout_median_max", np.nan),
        "preservation_exceeds_bound": pres.get("exceeds_bound", np.nan),
    }


# ------------------------------------------------------------- paired statistics (4-level evaluation)
def mcnemar_exact(correct_before: np.ndarray, correct_after: np.ndarray) -> dict:
    """Exact (binomial) McNemar test of a paired change in correctness.

    b = correct→wrong, c = wrong→correct; under H0 each discordant pair is either way with
    probability ½; two-sided p = min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½). No discordant
    pair: p = 1.
    """
    # lazy: scipy.stats / scikit-learn add ~1.5 s to each process importing this module (the
    # kernels of 02-05, the CLI's preflight through locate), which never call this function
    from scipy.stats import binom

    cb, ca = np.asarray(correct_before, bool), np.asarray(correct_after, bool)
    b, c = int((cb & ~ca).sum()), int((~cb & ca).sum())
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))
    return {"correct_to_wrong": b, "wrong_to_correct": c, "p_value": p}


def bootstrap_delta_ci(
    correct_before: np.ndarray,
    correct_after: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the paired accuracy change (samples resampled with replacement)."""
    d = np.asarray(correct_after, float) - np.asarray(correct_before, float)
    if len(d) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    # lazy: scikit-learn adds ~1.5 s to each process importing this module (see mcnemar_exact)
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC as MedMNIST reports it: binary on p(class 1), else one-vs-rest macro; NaN if undefined."""
    # lazy: scipy.stats / scikit-learn add ~1.5 s to each process importing this module (the
    # kernels of 02-05, the CLI's preflight through locate), which never call this function
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    if (
        len(present) < probs.shape[1]
    ):  # OvR needs every class present: average over the present ones
        return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def per_class_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    y, pred = np.asarray(y), np.asarray(pred)
    return np.array(
        [(pred[y == c] == c).mean() if (y == c).any() else np.nan for c in range(n_classes)]
    )


# part of every cache key: raise it when preprocessing or the forward pass changes
CACHE_VERSION = 1


def prediction_key(
    model,
    images: np.ndarray,
    cfg: models.ModelConfig,
    batch_size: int,
    device,
    skip: str | None = None,
) -> str:
    """What determines a model's outputs on ``images``: its weights (those whose name starts with
    ``skip`` left out), the images' bytes, the model config, the batch size (fp32 blocking), the
    device type and the torch version."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        if skip and name.startswith(skip):
            continue
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    first = np.asarray(images[:1])
    shape = (len(images), *first.shape[1:])
    h.update(f"{first.dtype}|{shape}|{cfg!r}|{batch_size}|skip={skip}".encode())
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    h.update(f"{CACHE_VERSION}|{dev.type}|{gpu}|{torch.__version__}|{timm.__version__}".encode())
    for sl in models.iter_batches(len(images), 4096):  # a view is never materialised whole
        h.update(np.ascontiguousarray(images[sl]).tobytes())
    return h.hexdigest()


def _cached(path: Path, compute, rows: int) -> np.ndarray:
    """``path``'s array, or ``compute()`` written there atomically. Content-keyed, so parallel
    writers write the same bytes. A file that cannot be read or has the wrong shape (a killed
    writer) is recomputed; a failed write (full disk, read-only folder) costs the cache, not the
    result."""
    if path.exists():
        try:
            arr = np.load(path)
            if arr.ndim == 2 and len(arr) == rows and arr.dtype == np.float32:
                return arr
        except (OSError, ValueError, EOFError):
            pass
    arr = np.asarray(compute(), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, arr)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    return arr


def _has_linear_head(model) -> bool:
    return hasattr(model, "forward_head") and isinstance(
        getattr(model, "head", None), torch.nn.Linear
    )


def _np_probs(model, images, cfg, batch_size, device, cache_dir: Path | None = None) -> np.ndarray:
    """Probabilities of ``model`` on ``images``. With ``cache_dir`` (on the CPU, for a model with a
    linear head): the pre-logit features are cached by the backbone's weights and the images, and the
    head is applied to them by the same batches (bit-identical to a full pass in fp32). The base
    model's features are then computed once per set, not once per experiment, a head edit is
    evaluated without a backbone pass, and notebook 06 reads the FT-Train features that 04
    computed. Other models (or CUDA's bf16): the probabilities are cached by the whole model."""
    if cache_dir is None:
        return models.predict_probs(model, images, cfg, batch_size, device).numpy()
    cache_dir = Path(cache_dir)
    if torch.device(device).type == "cpu" and _has_linear_head(model):
        key = prediction_key(model, images, cfg, batch_size, device, skip="head.")
        feats = _cached(
            cache_dir / f"{key}.features.npy",
            lambda: models.predict_pre_logits(model, images, cfg, batch_size, device).numpy(),
            len(images),
        )
        logits = models.head_logits(model, torch.from_numpy(feats), batch_size)
        return torch.softmax(logits, -1).numpy()
    key = prediction_key(model, images, cfg, batch_size, device)
    return _cached(
        cache_dir / f"{key}.npy",
        lambda: models.predict_probs(model, images, cfg, batch_size, device).numpy(),
        len(images),
    )


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
    method: str,
    before,
    after,
    data: Data,
    split: Split,
    edited_positions: np.ndarray,
    stats_positions: np.ndarray,
    cfg: models.ModelConfig,
    batch_size: int = 256,
    device="cpu",
    seed: int = 0,
    n_boot: int = 2000,
    cache_dir: Path | None = None,
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
    ``cache_dir``: where predictions are cached by content (see ``_np_probs``).
    """

    def probs(model, images):
        return _np_probs(model, images, cfg, batch_size, device, cache_dir)

    n_cls = data.info.n_classes
    ed_imgs, ed_y = split.view(data, "edit_discovery"), split.labels(data, "edit_discovery")
    edited_positions = np.asarray(edited_positions, dtype=int)
    pb_ed, pa_ed = (
        probs(before, ed_imgs),
        probs(after, ed_imgs),
    )
    levels: dict[str, dict] = {}
    t = transitions(
        ed_y[edited_positions], pb_ed[edited_positions].argmax(1), pa_ed[edited_positions].argmax(1)
    )
    levels["edit_samples"] = {
        "method": method,
        "total": t["n"],
        "num_fixed": t["wrong_to_correct"],
        "fix_rate": t["fix_rate"],
        "broken": t["correct_to_wrong"],
    }
    levels["projection_samples"] = {
        "method": method,
        **ft_train_stability(
            before, after, data, split, stats_positions, cfg, batch_size, device, cache_dir
        ),
    }
    te_imgs, te_y = split.view(data, "test"), split.labels(data, "test")
    pb, pa = (
        probs(before, te_imgs),
        probs(after, te_imgs),
    )
    yb, ya = pb.argmax(1), pa.argmax(1)
    tr = transitions(te_y, yb, ya)
    mc = mcnemar_exact(yb == te_y, ya == te_y)
    lo, hi = bootstrap_delta_ci(yb == te_y, ya == te_y, n_boot, seed)
    gen = pair_generalisation(
        ed_y[edited_positions], pb_ed[edited_positions].argmax(1), te_y, yb, ya
    )
    levels["test_set"] = {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "acc_delta": tr["acc_after"] - tr["acc_before"],
        "delta_ci_low": lo,
        "delta_ci_high": hi,
        "correct_to_wrong": tr["correct_to_wrong"],
        "wrong_to_correct": tr["wrong_to_correct"],
        "mcnemar_p": mc["p_value"],
        "stability": tr["stability"],
        "f1_macro_before": macro_f1(te_y, yb, n_cls),
        "f1_macro_after": macro_f1(te_y, ya, n_cls),
        "auc_before": auc(te_y, pb),
        "auc_after": auc(te_y, pa),
        # what always answering the largest Test class scores: an edited model below it is broken
        "majority_share": float(np.bincount(te_y, minlength=n_cls).max() / max(len(te_y), 1)),
        **gen,
    }
    rest = np.setdiff1d(np.arange(len(ed_y)), edited_positions)
    tr = transitions(ed_y[rest], pb_ed[rest].argmax(1), pa_ed[rest].argmax(1))
    levels["edit_discovery_set"] = {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "wrong_to_correct": tr["wrong_to_correct"],
        "correct_to_wrong": tr["correct_to_wrong"],
        "fix_rate": tr["fix_rate"],
        "stability": tr["stability"],
    }
    va_imgs, va_y = split.view(data, "ft_val"), split.labels(data, "ft_val")
    vb = probs(before, va_imgs).argmax(1)
    va = probs(after, va_imgs).argmax(1)
    tr = transitions(va_y, vb, va)
    levels["val_set"] = {
        "method": method,
        "total": tr["n"],
        "acc_before": tr["acc_before"],
        "acc_after": tr["acc_after"],
        "acc_delta": tr["acc_after"] - tr["acc_before"],
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
    return {"levels": levels, "confusion": cm, "per_class": per_class}


def summary_metrics(
    ev: dict,
    edit_seconds: float | None,
    duration_seconds: float | None,
    info: dict | None = None,
) -> dict:
    """The original system's metric names (one flat dict per method; NaN where undefined, never 0),
    and from the edit's ``info``: its preservation error and whether a checkpoint was reused (the
    retrain baseline's time is then the training time recorded when it was trained)."""
    info = info or {}
    e, p, t = (
        ev["levels"]["edit_samples"],
        ev["levels"]["projection_samples"],
        ev["levels"]["test_set"],
    )
    return {
        "method": e["method"],
        "edit_time_seconds": edit_seconds,
        "duration_seconds": duration_seconds,
        "edit_total_wrong": e["total"],
        "edit_num_fixed": e["num_fixed"],
        "edit_fix_ratio": e["fix_rate"],
        "test_total": t["total"],
        "test_acc_before": t["acc_before"],
        "test_acc_after": t["acc_after"],
        "test_acc_delta": t["acc_delta"],
        "test_correct_to_wrong": t["correct_to_wrong"],
        "test_wrong_to_correct": t["wrong_to_correct"],
        "test_mcnemar_p": t["mcnemar_p"],
        "test_delta_ci_low": t["delta_ci_low"],
        "test_delta_ci_high": t["delta_ci_high"],
        "test_stability": t["stability"],
        "test_auc_after": t["auc_after"],
        "test_f1_macro_after": t["f1_macro_after"],
        "test_auc_before": t["auc_before"],
        "test_majority_share": t.get("majority_share", np.nan),
        "test_same_pair_errors": t["same_pair_errors"],
        "test_same_pair_fix_rate": t["same_pair_fix_rate"],
        "test_pair_classes_regression_rate": t["pair_classes_regression_rate"],
        "proj_stability": p["heldout_stability"],
        "proj_regression_rate": p["heldout_regression_rate"],
        "proj_n_heldout": p["heldout_n"],
        "proj_stability_insample": p["insample_stability"],
        "ed_rest_fix_rate": ev["levels"]["edit_discovery_set"]["fix_rate"],
        "ed_rest_stability": ev["levels"]["edit_discovery_set"]["stability"],
        **_val_metrics(ev),
        **preservation_columns(info),
        "reused_checkpoint": info.get("reused", np.nan),
    }


def _val_metrics(ev: dict) -> dict:
    """FT-Val (selection level) columns; NaN where the level is absent (runs made before it existed)."""
    v = ev["levels"].get("val_set")
    if v is None:
        return {
            k: np.nan
            for k in (
                "val_total",
                "val_acc_before",
                "val_acc_after",
                "val_acc_delta",
                "val_fix_rate",
                "val_regression_rate",
                "val_net_fixed",
            )
        }
    return {
        "val_total": v["total"],
        "val_acc_before": v["acc_before"],
        "val_acc_after": v["acc_after"],
        "val_acc_delta": v["acc_delta"],
        "val_fix_rate": v["fix_rate"],
        "val_regression_rate": v["regression_rate"],
        "val_net_fixed": v["wrong_to_correct"] - v["correct_to_wrong"],
    }


def write_comparison(
    run_dir, evals: dict[str, dict], metrics: dict[str, dict], extra: dict | None = None
) -> None:
    """``comparative_evaluation_<level>.csv`` (one row per method), confusion matrices (long format
    with a method column) and ``metrics.json`` (merged with what earlier notebooks wrote)."""
    run_dir = Path(run_dir)
    for level in LEVELS:
        rows = pd.DataFrame([ev["levels"][level] for ev in evals.values()])
        f = run_dir / f"comparative_evaluation_{level}.csv"
        if f.is_file():  # keep other methods' rows (06 and 07 write the same files)
            old = pd.read_csv(f)
            rows = pd.concat([old[~old.method.isin(rows.method)], rows], ignore_index=True)
        atomic_write_text(f, rows.to_csv(index=False))
    for name, k in (("confusion_matrix_orig.csv", 0), ("confusion_matrix_edit.csv", 1)):
        frames = []
        for method, ev in evals.items():
            cm = (
                pd.DataFrame(ev["confusion"][k])
                .rename_axis("true")
                .reset_index()
                .melt(id_vars="true", var_name="pred", value_name="count")
            )
            frames.append(cm.assign(method=method))
        new = pd.concat(frames, ignore_index=True)
        f = run_dir / name
        if f.is_file():
            old = pd.read_csv(f)
            new = pd.concat([old[~old.method.isin(new.method)], new], ignore_index=True)
        atomic_write_text(f, new.to_csv(index=False))
    f = run_dir / "metrics.json"
    blob = json.loads(f.read_text()) if f.is_file() else {"methods": {}}
    blob["methods"].update(metrics)
    blob.update(extra or {})
    atomic_write_text(
        f, json.dumps(blob, indent=2, default=lambda v: None if v is None else float(v))
    )


def forget_methods(run_dir, names) -> None:
    """Remove ``names``' rows from ``metrics.json`` and the comparison CSVs (their results are stale)."""
    run_dir, names = Path(run_dir), set(names)
    files = [f"comparative_evaluation_{level}.csv" for level in LEVELS]
    for f in [
        run_dir / n for n in (*files, "confusion_matrix_orig.csv", "confusion_matrix_edit.csv")
    ]:
        if f.is_file() and f.stat().st_size > 1:
            old = pd.read_csv(f)
            if "method" in old and old.method.isin(names).any():
                atomic_write_text(f, old[~old.method.isin(names)].to_csv(index=False))
    f = run_dir / "metrics.json"
    if f.is_file():
        blob = json.loads(f.read_text())
        if names & set(blob["methods"]):
            blob["methods"] = {k: v for k, v in blob["methods"].items() if k not in names}
            atomic_write_text(f, json.dumps(blob, indent=2))


def load_metrics(run_dir) -> pd.DataFrame:
    """``metrics.json`` of a run as a table (one row per method)."""
    f = Path(run_dir) / "metrics.json"
    if not f.is_file():
        return pd.DataFrame()
    return pd.DataFrame(json.loads(f.read_text())["methods"].values())


def aggregate_seeds(tables: dict[int, pd.DataFrame], level: float = 0.95) -> pd.DataFrame:
    """Mean, std, t-based CI and count of every numeric metric per method across seeds.

    ``tables`` maps a seed to its run's metrics table (:func:`load_metrics`). A metric that is
    missing or NaN in a seed is left out of that metric's statistics (its ``n`` says so), never
    counted as 0.
    """
    frames = [t.assign(seed=s) for s, t in tables.items() if len(t)]
    if not frames:
        return pd.DataFrame(columns=["method", "metric", "mean", "std", "ci_low", "ci_high", "n"])
    df = pd.concat(frames, ignore_index=True)
    rows = []
    numeric = [
        c
        for c in df.columns
        if c not in ("method", "seed") and pd.api.types.is_numeric_dtype(df[c])
    ]
    for method, g in df.groupby("method", sort=False):
        for col in numeric:
            v = g[col].dropna().to_numpy(float)
            n = len(v)
            mean = float(v.mean()) if n else np.nan
            std = float(v.std(ddof=1)) if n > 1 else np.nan
            half = t_half_width(v, level)
            rows.append(
                {
                    "method": method,
                    "metric": col,
                    "mean": mean,
                    "std": std,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": n,
                }
            )
    return pd.DataFrame(rows)


def seeds_table(
    agg: pd.DataFrame,
    metrics=("edit_fix_ratio", "proj_regression_rate", "test_acc_delta", "edit_time_seconds"),
) -> pd.DataFrame:
    """Wide 'mean ± half-CI' table: one row per method, one column per metric."""
    out = {}
    for _, r in agg[agg.metric.isin(metrics)].iterrows():
        half = (r["ci_high"] - r["mean"]) if np.isfinite(r["ci_high"]) else np.nan
        out.setdefault(r.method, {})[r.metric] = (
            f"{r['mean']:.3f} ± {half:.3f}" if np.isfinite(half) else f"{r['mean']:.3f}"
        )
    return pd.DataFrame.from_dict(out, orient="index")[
        [m for m in metrics if m in agg.metric.values]
    ]
