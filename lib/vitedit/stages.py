"""The steps of notebooks 04-07, one tested function each; the notebooks call them and show the results.

    ctx = stages.load_context(run)              # data, split, the run's model, its checkpoint reference
    sel = stages.select_edits(ctx)              # the errors to edit and the statistics samples
    out = stages.run_methods(ctx, sel, "04_edit_alphaedit")   # every registered method of that notebook
    ev = stages.evaluate_edits(ctx)             # 06: the 4-level evaluation of every recorded edit
    bl = stages.run_baselines(ctx, sel)         # 07: the baselines, evaluated the same way

Which methods run is the ``methods`` parameter, read against the registry (:mod:`vitedit.methods`);
each method's editor is built from the run's parameters under the same names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import (
    baselines,
    datasets,
    editing,
    evaluation,
    locate,
    methods,
    models,
    paths,
    runs,
    splits,
    train,
)
from .editing import EditData, EditResult

NON_SETTINGS = ("eval_batch_size", "progress")  # editor arguments that do not change an edit
OUTPUTS = {
    "04_edit_alphaedit": ("edit_summary.csv", "edit_log.csv"),  # per-method summary, per-sample log
    "05_edit_head": ("head_edit_summary.csv", "head_edit_log.csv"),
}


@dataclass
class Context:
    """What notebooks 04-07 start from: the run's data, split and model (verified by sha256)."""

    run_dir: Path
    params: dict
    data: datasets.Data
    split: splits.Split
    device: Any
    model: Any
    meta: dict
    cfg: models.ModelConfig
    base_ref: dict

    def edit_layers(self) -> dict:
        return locate.load_edit_layers(self.run_dir)

    @property
    def description(self) -> str:
        name = self.meta["fields"]["model"]["name"]
        return f"model {name} ({len(self.model.blocks)} blocks), checkpoint {self.base_ref['path']}"


def load_context(run) -> Context:
    """The run's data, split and trained model for the stage ``run`` (a :class:`vitedit.nb.Run`)."""
    p = run.params
    data = datasets.load(p)
    split = splits.load(run.dir, expect=p, data=data)
    device = models.resolve_device(p["device"])
    model, meta = train.load_run_model(run.dir, split, device, params=p)
    ctx = Context(
        run.dir,
        p,
        data,
        split,
        device,
        model,
        meta,
        train.model_config_of(meta),
        train.run_checkpoint_ref(run.dir),
    )
    locate.check_choices(
        p["trace_kinds"], p["trace_scopes"], len(model.blocks), p["edit_layers"] or []
    )
    return ctx


@dataclass
class Selection:
    """The Edit-Discovery errors to edit (the first ``max_edits`` in set order) and the FT-Train
    samples that build the editing statistics (``projection_samples``); the rest of FT-Train is
    held out for the evaluation."""

    labels: np.ndarray  # Edit-Discovery true labels
    pred: np.ndarray  # the model's predictions on Edit-Discovery
    errors: np.ndarray  # positions (in Edit-Discovery) of the errors to edit
    stats_positions: np.ndarray  # positions (in FT-Train) of the statistics samples
    edit_set: EditData
    n_ft_train: int
    pair: tuple[int, int] | None = None  # edit_selection: pair
    label_names: list[str] | None = None

    @property
    def message(self) -> str:
        which = ""
        if self.pair is not None:
            names = self.label_names or [str(i) for i in range(max(self.pair) + 1)]
            which = f" of the pair true '{names[self.pair[0]]}' predicted '{names[self.pair[1]]}'"
        msg = (
            f"editing {len(self.errors)}{which} of {int((self.labels != self.pred).sum())} "
            f"Edit-Discovery errors; "
            f"statistics from {len(self.stats_positions)} FT-Train samples, "
            f"{self.n_ft_train - len(self.stats_positions)} held out"
        )
        if len(self.errors) == 0:
            msg += "\nNo errors to edit: every editor returns the model unchanged."
        return msg


def select_edits(ctx: Context) -> Selection:
    p = ctx.params
    y, pred, _ = evaluation.predictions(
        ctx.model, ctx.data, ctx.split, "edit_discovery", ctx.cfg, p["eval_batch_size"], ctx.device
    )
    pair = None
    if p["edit_selection"] == "pair":
        errors, pair = locate.select_pair_errors(
            y, pred, p["max_edits"], p["edit_pair"], ctx.data.info.n_classes
        )
    else:
        errors = locate.select_errors(y, pred, p["max_edits"])
    n_ft = len(ctx.split.indices["ft_train"])
    pos = editing.stats_positions(n_ft, p["projection_samples"], p["seed"])
    return Selection(
        y,
        pred,
        errors,
        pos,
        editing.edit_data(ctx.data, ctx.split, pos, errors),
        n_ft,
        pair,
        list(ctx.data.info.label_names),
    )


def selected_methods(p: dict, notebook: str) -> list[methods.Method]:
    """The registered methods of ``notebook`` that the ``methods`` parameter asks for."""
    return [methods.get(n) for n in methods.names(notebook) if n in p["methods"]]


def prediction_cache(ctx: Context) -> Path:
    """Where models' predictions are cached by content (``<checkpoint_dir>/predictions``; safe to
    delete): the base model is evaluated once per checkpoint and set, not once per experiment."""
    return paths.resolve(ctx.params["checkpoint_dir"]) / "predictions"


def editor_context(method: methods.Method, ctx: Context) -> dict[str, Any]:
    """The non-parameter arguments ``method``'s editor takes (see :data:`vitedit.methods.CONTEXT_ARGS`)."""
    available = {
        "layers": lambda: ctx.edit_layers()["layers"],
        "cache_dir": lambda: paths.resolve(ctx.params["checkpoint_dir"]) / "stats",
        "cache_key": lambda: {"checkpoint": ctx.base_ref["sha256"]},
        "params": lambda: ctx.params,
        "data": lambda: ctx.data,
        "split": lambda: ctx.split,
    }
    return {name: available[name]() for name in method.context}


def settings(method: methods.Method, p: dict, context: dict) -> dict:
    """What determined an edit (recorded beside it and hashed into the edited checkpoint's name)."""
    out = {k: p[k] for k in (*methods.SHARED_KEYS, *method.params, "seed") if k not in NON_SETTINGS}
    if "layers" in context:
        out["layers"] = context["layers"]
    return out


def _named(method: methods.Method, result: EditResult) -> EditResult:
    """Results carry the registered name (several methods may share one editor class)."""
    result.info["method"] = method.name
    return result


@dataclass
class MethodRuns:
    results: dict[str, EditResult] = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> pd.DataFrame:
        """Every method's per-sample log in one table (``method`` column)."""
        frames = [r.log.assign(method=m) for m, r in self.results.items()]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=[*editing.LOG_COLUMNS, "method"])
        )

    def fix_rates(self) -> dict[str, float | None]:
        return {
            m: float(r.log["fixed"].mean()) if len(r.log) else None for m, r in self.results.items()
        }


def run_methods(ctx: Context, sel: Selection, notebook: str) -> MethodRuns:
    """Build, run and record every selected method of an edit notebook (04, 05): the edited
    checkpoint and ``edits/<method>.json`` in the run folder, and a summary row per method (fix
    rate, held-out and in-sample FT-Train stability)."""
    out = MethodRuns()
    rows = []
    p = ctx.params
    for method in selected_methods(p, notebook):
        context = editor_context(method, ctx)
        res = _named(
            method, method.build(p, **context).edit(ctx.model, ctx.cfg, sel.edit_set, ctx.device)
        )
        out.results[method.name] = res
        editing.record(ctx.run_dir, res, ctx.base_ref, settings(method, p, context), sel.edit_set)
        rows.append(
            evaluation.edit_summary(
                method.name,
                res,
                ctx.model,
                ctx.data,
                ctx.split,
                sel.stats_positions,
                ctx.cfg,
                p["eval_batch_size"],
                ctx.device,
                prediction_cache(ctx),
            )
        )
    out.summary = pd.DataFrame(rows)
    summary_file, log_file = OUTPUTS[notebook]
    out.summary.to_csv(ctx.run_dir / summary_file, index=False)
    out.log.to_csv(ctx.run_dir / log_file, index=False)
    return out


@dataclass
class Evaluations:
    evals: dict[str, dict] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics.values())

    def level(self, name: str) -> pd.DataFrame:
        return pd.DataFrame([ev["levels"][name] for ev in self.evals.values()])

    @property
    def per_class(self) -> pd.DataFrame:
        frames = [ev["per_class"] for ev in self.evals.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _four_level(ctx: Context, name: str, edited, edited_positions, stats_positions) -> dict:
    p = ctx.params
    return evaluation.four_level(
        name,
        ctx.model,
        edited,
        ctx.data,
        ctx.split,
        edited_positions,
        stats_positions,
        ctx.cfg,
        p["eval_batch_size"],
        ctx.device,
        p["seed"],
        p["bootstrap_samples"],
        prediction_cache(ctx),
    )


def _write(ctx: Context, out: Evaluations) -> None:
    if out.evals:
        evaluation.write_comparison(
            ctx.run_dir,
            out.evals,
            out.metrics,
            {"dataset": ctx.params["dataset"], "seed": ctx.params["seed"]},
        )


def evaluate_edits(ctx: Context) -> Evaluations:
    """Notebook 06: the same 4-level evaluation of every edited model recorded in ``edits/``,
    against exactly the checkpoint it started from (sha256 checked); writes the comparative CSVs
    and ``metrics.json``. The edits of a notebook recorded stale or failed in the run (an earlier
    stage ran again since) are not evaluated: ``skipped`` says why."""
    out = Evaluations()
    folder = runs.RunFolder(ctx.run_dir)
    for name, rec in editing.list_edits(ctx.run_dir, kinds=methods.names(baselines=False)).items():
        notebook = methods.get(name).notebook
        state = folder.stage(notebook).get("status")
        if state in ("stale", "failed"):
            out.skipped[name] = (
                f"{notebook} is {state}: its edits are not evaluated; rerun {notebook}"
            )
            continue
        t0 = time.perf_counter()
        edited, rec = editing.load_edited(ctx.run_dir, name, ctx.device)
        if rec["base_sha256"] != ctx.base_ref["sha256"]:
            raise editing.EditError(
                f"{name} was edited from another checkpoint than this run's; rerun its notebook"
            )
        out.evals[name] = _four_level(
            ctx, name, edited, rec["edited_positions"], rec["stats_positions"]
        )
        info = rec["info"]
        spent = (
            (info.get("edit_seconds") or 0)
            + (info.get("stats_seconds") or 0)
            + time.perf_counter()
            - t0
        )
        out.metrics[name] = evaluation.summary_metrics(
            out.evals[name], info.get("edit_seconds"), spent, info
        )
    evaluation.forget_methods(ctx.run_dir, out.skipped)  # no stale row stays in the comparison
    _write(ctx, out)
    if out.evals:
        out.per_class.to_csv(ctx.run_dir / "per_class_test_accuracy.csv", index=False)
    return out


def run_baselines(ctx: Context, sel: Selection) -> Evaluations:
    """Notebook 07: every selected baseline through the editor interface, recorded, and evaluated
    like the edit methods; a baseline with nothing to train on is recorded as skipped."""
    out = Evaluations()
    p = ctx.params
    for method in selected_methods(p, methods.BASELINE_NOTEBOOK):
        t0 = time.perf_counter()
        context = editor_context(method, ctx)
        res = _named(
            method, method.build(p, **context).edit(ctx.model, ctx.cfg, sel.edit_set, ctx.device)
        )
        if res.info.get("status") == "skipped":
            out.skipped[method.name] = res.info["reason"]
            editing.record_skipped(ctx.run_dir, method.name, res.info["reason"])
            baselines.write_summary(ctx.run_dir, method.name, reason=res.info["reason"])
            continue
        editing.record(ctx.run_dir, res, ctx.base_ref, settings(method, p, context), sel.edit_set)
        out.evals[method.name] = _four_level(
            ctx, method.name, res.model, sel.errors, sel.stats_positions
        )
        out.metrics[method.name] = evaluation.summary_metrics(
            out.evals[method.name], res.info["edit_seconds"], time.perf_counter() - t0, res.info
        )
        baselines.write_summary(ctx.run_dir, method.name, out.metrics[method.name])
    _write(ctx, out)
    return out


# --------------------------------------------------------------------------- 03: tracing
@dataclass
class Tracing:
    """The tracing of the errors (``layer_importance.csv``) and its per-layer statistics."""

    importance: pd.DataFrame
    stats: pd.DataFrame
    noise_std: float
    noise: Any  # (num_ablations, n_patches, dim) noise added to the patch embeddings
    restores: list
    region_restores: list = field(default_factory=list)  # the token x layer trace (trace_regions)
    seconds_per_error: float | None = None
    region_seconds_per_error: float | None = None

    @property
    def message(self) -> str:
        msg = (
            f"noise std {self.noise_std:.4f}; {len(self.restores)} restorations x {len(self.noise)} noisy "
            f"copies per sample"
        )
        if self.seconds_per_error is not None:
            msg += f" ({self.seconds_per_error:.2f} s per error)"
        if self.region_restores:
            cost = self.region_seconds_per_error
            msg += f"; token x layer trace: {len(self.region_restores)} restorations" + (
                f" ({cost:.2f} s per error)" if cost is not None else ""
            )
        return msg


def trace(ctx: Context, err: Errors) -> Tracing:
    """Causal tracing of the traced Edit-Discovery errors: noise scaled to FT-Train's patch
    embeddings, every restoration the parameters ask for; writes ``layer_importance.csv`` and
    ``layer_statistics.csv``."""
    labels, pred, errors = err.labels, err.pred, err.traced
    p, model = ctx.params, ctx.model
    n_layers = len(model.blocks)
    n_ft = len(ctx.split.indices["ft_train"])
    ft_images = ctx.split.view(
        ctx.data, "ft_train", np.arange(min(p["noise_samples"] or n_ft, n_ft))
    )
    std = p["noise_std"] or p["noise_scale"] * locate.patch_embedding_std(
        model, ft_images, ctx.cfg, p["eval_batch_size"], ctx.device
    )
    noise = locate.make_noise(
        p["num_ablations"],
        (model.patch_embed.num_patches, model.embed_dim),
        std,
        p["seed"] if p["noise_seed"] is None else p["noise_seed"],
    )
    restores = locate.restorations(n_layers, p["trace_kinds"], p["trace_scopes"], p["trace_window"])
    regions = locate.region_restorations(n_layers, p["trace_regions"]) if p["trace_regions"] else []

    def run(rs: list) -> tuple[pd.DataFrame, float]:
        t0 = time.perf_counter()
        out = locate.trace_errors(
            model,
            ctx.cfg,
            ctx.split.images(ctx.data, "edit_discovery"),
            labels,
            pred,
            errors,
            rs,
            noise,
            p["min_total_effect"],
            ctx.device,
            p["trace_max_rows"],
            p["progress"],
            official_index=ctx.split.indices["edit_discovery"],
        )
        return out, time.perf_counter() - t0

    importance, seconds = run(restores)
    region_seconds = None
    if regions:
        region_imp, region_seconds = run(regions)
        importance = pd.concat([importance, region_imp], ignore_index=True)
    stats = locate.layer_statistics(
        pd.concat([importance, locate.region_max_effects(importance)], ignore_index=True)
    )
    importance.to_csv(ctx.run_dir / "layer_importance.csv", index=False)
    stats.to_csv(ctx.run_dir / "layer_statistics.csv", index=False)
    n = len(errors)
    return Tracing(
        importance,
        stats,
        float(std),
        noise,
        restores,
        regions,
        seconds / n if n else None,  # no error traced: no cost per error
        region_seconds / n if n and region_seconds is not None else None,
    )


@dataclass
class Errors:
    """The model's errors on Edit-Discovery: all of them, and the first ``max_samples`` that are traced."""

    labels: np.ndarray
    pred: np.ndarray
    all: np.ndarray  # positions in Edit-Discovery
    traced: np.ndarray

    @property
    def message(self) -> str:
        return (
            f"{len(self.all)} of {len(self.labels)} Edit-Discovery samples misclassified; "
            f"tracing {len(self.traced)}"
        )

    def crosstab(self) -> pd.DataFrame:
        """Errors by (true, predicted) class."""
        return pd.crosstab(
            pd.Series(self.labels[self.all], name="true"),
            pd.Series(self.pred[self.all], name="predicted"),
        )


def find_errors(ctx: Context) -> Errors:
    p = ctx.params
    y, pred, _ = evaluation.predictions(
        ctx.model, ctx.data, ctx.split, "edit_discovery", ctx.cfg, p["eval_batch_size"], ctx.device
    )
    return Errors(
        y,
        pred,
        locate.select_errors(y, pred, None),
        locate.select_errors(y, pred, p["max_samples"]),
    )


def attribution_maps(ctx: Context, err: Errors) -> tuple[np.ndarray, list]:
    """Patch attribution (ASTRA) of the first ``attribution_samples`` traced errors: their positions
    and one map each (seeded by ``seed`` + position)."""
    p = ctx.params
    images = ctx.split.images(ctx.data, "edit_discovery")
    picked = err.traced[: p["attribution_samples"]]
    maps = [
        locate.patch_attribution(
            ctx.model,
            ctx.cfg,
            images[s],
            int(err.pred[s]),
            p["attribution_masks"],
            p["attribution_keep_prob"],
            p["seed"] + int(s),
            p["attribution_alpha"],
            ctx.device,
        )
        for s in picked
    ]
    return picked, maps


def hand_over_layers(ctx: Context, tr: Tracing, err: Errors, seconds: float) -> tuple[dict, dict]:
    """The edit layers (``edit_layers`` > tracing > the last three) and the tracing's summary;
    writes ``edit_layers.json`` and ``locate_summary.json``."""
    p = ctx.params
    n_layers = len(ctx.model.blocks)
    choice = locate.edit_layers_from(tr.stats, n_layers, p, ctx.run_dir)
    summary = locate.summarize(
        tr.importance,
        len(err.all),
        len(err.labels),
        tr.noise_std,
        len(tr.restores),
        choice,
        seconds,
        n_layers,
    )
    summary["trace_seconds_per_error"] = tr.seconds_per_error
    summary["trace_regions"] = p["trace_regions"]
    summary["region_trace_seconds_per_error"] = tr.region_seconds_per_error
    locate.save_summary(ctx.run_dir, summary)
    return choice, summary
