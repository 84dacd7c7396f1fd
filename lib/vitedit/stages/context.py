"""What notebooks 03-07 start from: the run's data, split and trained model, verified."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import checkpoints, datasets, evaluation, locate, models, paths, splits
from ..editors.statistics import StatsCache
from ..statecache import StateCache


@dataclass
class Context:
    """The run's data, split and model (verified by sha256), and how its stages run models."""

    run_dir: Path
    params: dict
    data: datasets.Data
    split: splits.Split
    device: Any
    model: Any
    meta: dict
    cfg: models.ModelConfig
    base_ref: dict
    # the benchmark's in-process path (None in a notebook): the base model's hidden states in
    # memory, and one statistics cache for every edit (its error targets computed once)
    states: StateCache | None = None
    stats_cache: StatsCache | None = None

    def edit_layers(self) -> dict:
        return locate.load_edit_layers(self.run_dir)

    @property
    def description(self) -> str:
        name = self.meta["fields"]["model"]["name"]
        return f"model {name} ({len(self.model.blocks)} blocks), checkpoint {self.base_ref['path']}"

    @property
    def runner(self) -> models.Runner:
        """The run's preprocessing config, inference batch size and device (the in-process path's
        runner keeps the features it computed: :class:`vitedit.statecache.CachingRunner`)."""
        if self.states is not None:
            return self.states.runner
        return models.Runner(self.cfg, self.params["eval_batch_size"], self.device)

    @property
    def prediction_cache(self) -> Path:
        """Where models' predictions are cached by content (``<checkpoint_dir>/predictions``; safe
        to delete): the base model is evaluated once per checkpoint and set, not once per
        experiment."""
        return paths.resolve(self.params["checkpoint_dir"]) / "predictions"

    @property
    def evaluator(self) -> evaluation.Evaluator:
        return dataclasses.replace(
            evaluation.Evaluator.from_params(
                self.params, self.data, self.split, self.runner, self.prediction_cache
            ),
            states=self.states,
        )


def load_context(run) -> Context:
    """The run's data, split and trained model for the stage ``run`` (a :class:`vitedit.nb.Run`)."""
    p = run.params
    data = datasets.load(p)
    split = splits.load(run.dir, expect=p, data=data)
    device = models.resolve_device(p["device"])
    model, meta = checkpoints.load_run_model(run.dir, split, device, params=p)
    ctx = Context(
        run_dir=run.dir,
        params=p,
        data=data,
        split=split,
        device=device,
        model=model,
        meta=meta,
        cfg=checkpoints.model_config_of(meta),
        base_ref=checkpoints.run_checkpoint_ref(run.dir),
    )
    locate.check_choices(
        p["trace_kinds"], p["trace_scopes"], len(model.blocks), p["edit_layers"] or []
    )
    return ctx
