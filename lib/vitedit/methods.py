"""The method registry: every editing method and baseline is declared once, in
this module, through :func:`register` (the machinery is in :mod:`vitedit.method_registry`).

One :class:`Method` says which editor class runs it, which schema parameters it takes (the editor's
keyword names are the schema keys themselves), which notebook runs it, and what its result depends
on. The CLI's choices, the ``methods`` parameter, the sweep's tables and folder names, and the
notebooks' loops all read this registry (compare ROME's ``ALG_DICT`` and timm's ``register_model``).

Adding a method = an editor class (``edit(model, runner, EditData) -> EditResult``; a head editor
implements only its ``solve``) + one :func:`register` call below + its tests; ``tests/test_methods.py``
fails when an editor's keyword and its method's schema keys differ, and runs every registered method.

This module imports neither torch nor the editors: the CLI and the sweep read it without paying for
torch (about 2 s per process); :attr:`Method.editor_class` imports the editor when it is needed.
"""

from __future__ import annotations

from .method_registry import (  # the registry's interface, used as vitedit.methods.<name>
    BASELINE_NOTEBOOK,
    CONTEXT_ARGS,
    EDIT_NOTEBOOKS,
    EVALUATE_NOTEBOOK,
    REGISTRY,
    SHARED_KEYS,
    Method,
    by_alias,
    by_notebook_text,
    get,
    names,
    register,
)

__all__ = [
    "BASELINE_NOTEBOOK",
    "CONTEXT_ARGS",
    "EDIT_NOTEBOOKS",
    "EVALUATE_NOTEBOOK",
    "REGISTRY",
    "SHARED_KEYS",
    "Method",
    "by_alias",
    "by_notebook_text",
    "get",
    "names",
    "register",
]

_TARGET_KEYS = tuple(
    "v_lr v_num_grad_steps v_weight_decay v_weight_decay_rule clamp_norm_factor".split()
)
_RUN_KEYS = ("edit_modules", "stats_scope", "edit_batch_size", "progress")
_LAYER_CONTEXT = ("layers", "stats_cache")

register(
    Method(
        "alphaedit",
        "vitedit.editors.alphaedit:AlphaEdit",
        "04_edit_alphaedit",
        ("nullspace_threshold", "nullspace_rule", "L2", "L2_rule", *_RUN_KEYS, *_TARGET_KEYS),
        "AlphaEdit: null-space-projected MEMIT-style update of the traced layers' MLP output "
        "(Fang et al. 2025)",
        fixed={"null_space": True},
        context=_LAYER_CONTEXT,
        uses_layers=True,
        name_keys={"nullspace_threshold": "thresh", "L2": "L2"},
        null_space_key="nullspace_threshold",
        grid={
            "nullspace_threshold": [1e-6, 1e-4],
            "L2": [0.3, 1.0, 3.0],
            "rank_scope": ["all", "region_max"],  # edit layers from the mlp or token x layer trace
        },
    )
)
register(
    Method(
        "memit",
        "vitedit.editors.memit:MEMIT",
        "04_edit_alphaedit",
        ("mom2_update_weight", *_RUN_KEYS, *_TARGET_KEYS),
        "MEMIT: covariance-weighted least squares (K Kᵀ + λ·C0)⁻¹ with C0 the preserved keys' second "
        "moment (Meng et al. 2023)",
        context=_LAYER_CONTEXT,
        uses_layers=True,
        name_keys={"mom2_update_weight": "mom2w"},
        grid={"mom2_update_weight": [300.0, 3000.0, 30000.0]},
    )
)
register(
    Method(
        "alphaedit_noproj",
        "vitedit.editors.alphaedit:AlphaEdit",
        "04_edit_alphaedit",
        ("L2", "L2_rule", *_RUN_KEYS, *_TARGET_KEYS),
        "ablation: AlphaEdit's solve with P = I and no C0 term (plain ridge least squares; not "
        "MEMIT): what the null space buys",
        fixed={"null_space": False, "nullspace_threshold": None, "nullspace_rule": None},
        context=_LAYER_CONTEXT,
        uses_layers=True,
        name_keys={"L2": "L2"},
        loss_note="the ablation runs AlphaEdit's solve and L2 without the projection P, to show "
        "what the null space prevents",
        grid={"L2": [1.0, 10.0, 100.0]},
    )
)
register(
    Method(
        "head",
        "vitedit.editors.head_gradient:HeadGradientEditor",
        "05_edit_head",
        ("head_lr", "head_steps", "ewc_lambda"),
        "classifier head by gradient with an EWC penalty",
        grid={"ewc_lambda": [3.0, 30.0, 300.0], "head_lr": [1e-2]},
    )
)
register(
    Method(
        "head_closed_form",
        "vitedit.editors.head_closed_form:HeadClosedFormEditor",
        "05_edit_head",
        ("ridge_lambda", "head_margin", "head_error_weight"),
        "classifier head in closed form (ridge toward the original head, margin targets)",
        cli_flag="--closed-form",
        grid={"head_margin": [0.5, 1.0, 3.0]},
    )
)
register(
    Method(
        "head_anchored",
        "vitedit.editors.head_anchored:HeadAnchoredEditor",
        "05_edit_head",
        ("ridge_lambda", "head_margin", "head_error_weight", "anchor_weight"),
        "classifier head in closed form that also keeps the logits of the Edit-Discovery samples "
        "not edited (held-out anchors near the boundary; issue 30)",
        # head_closed_form's margins, each with a light and a heavy anchor (a pilot grid: issue 30)
        grid={"head_margin": [0.5, 1.0, 3.0], "anchor_weight": [1.0, 10.0]},
        reads_edit_discovery_rest=True,
    )
)
register(
    Method(
        "head_refit",
        "vitedit.editors.head_refit:HeadRefitEditor",
        "05_edit_head",
        ("refit_l2",),
        "classifier head refit on Edit-Discovery: cross-entropy on the edited errors and the "
        "samples not edited (at the model's decisions), ridge toward the original head (DFR-style; "
        "issue 30)",
        grid={"refit_l2": [1e-4, 1e-3, 1e-2, 1e-1]},  # a pilot grid (issue 30)
        reads_edit_discovery_rest=True,
    )
)
register(
    Method(
        "head_dfr",
        "vitedit.editors.head_refit:HeadDFREditor",
        "05_edit_head",
        ("refit_l2",),
        "classifier head refit on every labelled Edit-Discovery sample (DFR-style last-layer "
        "retraining on held-out data, from the original head), ridge toward it (issue 30)",
        # a pilot grid (issue 30) set on BloodMNIST's design seeds 42-44 (bench_head_headroom.py):
        # 1e-3..1e-1 span 1.7 %..0.4 % FT-Val regression, 1 leaves the head almost unchanged (it
        # printed Test beside FT-Val; design seeds only, the fresh seeds 45-49 played no part)
        grid={"refit_l2": [1e-3, 1e-2, 3e-2, 1e-1, 1.0]},
        reads_edit_discovery_rest=True,
        reads_anchor_labels=True,
    )
)
register(
    Method(
        "head_nullspace",
        "vitedit.editors.head_nullspace:HeadNullspaceEditor",
        "05_edit_head",
        (
            "head_nullspace_threshold",
            "head_L2",
            "head_margin",
            "head_verify_budget",
            "head_verify_backoff",
            "head_verify_holdout",
        ),
        "classifier head in closed form inside the null space of the FT-Train keys (AlphaEdit's "
        "projection at the head), optionally scaled back to a prediction-change budget",
        inactive_when={
            "head_verify_backoff": ("head_verify_budget", 0.0),
            "head_verify_holdout": ("head_verify_budget", 0.0),
        },
        null_space_key="head_nullspace_threshold",
        grid={
            "head_L2": [1e-2, 1e-1],
            "head_verify_budget": [0.0, 0.01],
            "head_verify_backoff": ["scale", "sample"],
            "head_verify_holdout": [0.0, 0.5],
        },
    )
)
register(
    Method(
        "head_guarded",
        "vitedit.editors.head_guarded:HeadGuardedEditor",
        "05_edit_head",
        ("head_margin", "head_keep_margin", "head_keep_weight", "head_keep_pull"),
        "classifier head by squared hinges: fix the errors with a margin while every statistics "
        "sample keeps its decision with a margin, plus a ridge pull on their logits",
        fixed={"head_weight_ridge": 0.0},  # its ablation head_guarded_weight_ridge sets it
        grid={
            "head_keep_pull": [3.0, 10.0, 30.0],
            "head_margin": [0.5, 1.0],
            "head_keep_weight": [0.0, 1.0],  # 0: the guard's ablation (the pull alone)
        },
    )
)
register(
    Method(
        "head_guarded_weight_ridge",
        "vitedit.editors.head_guarded:HeadGuardedEditor",
        "05_edit_head",
        ("head_margin", "head_keep_margin", "head_keep_weight", "head_weight_ridge"),
        "ablation: head_guarded with a weight-space ridge ‖Θ − Θ0‖² (head_weight_ridge, scaled "
        "like the pull) in place of its logit pull: what the pull in the data's directions buys",
        fixed={"head_keep_pull": 0.0},
        grid={"head_weight_ridge": [3.0, 10.0, 30.0], "head_margin": [0.5, 1.0]},
    )
)
register(
    Method(
        "head_closed_form_views",
        "vitedit.editors.head_views:HeadClosedFormViewsEditor",
        "05_edit_head",
        ("ridge_lambda", "head_margin", "head_error_weight"),
        "ablation of the keys: head_closed_form with each error's key and target averaged over "
        "views of its image (the training's shifts, flips and turns; issue 30)",
        context=("params",),
        grid=dict(REGISTRY["head_closed_form"].grid),  # the same grid: one comparison
    )
)
register(
    Method(
        "head_closed_form_each_view",
        "vitedit.editors.head_views:HeadClosedFormEachViewEditor",
        "05_edit_head",
        ("ridge_lambda", "head_margin", "head_error_weight"),
        "ablation of the keys: head_closed_form with every view of an error's image a key of its "
        "own at the error's label (the margin asked of each view; the views share its weight)",
        context=("params",),
        grid=dict(REGISTRY["head_closed_form"].grid),  # the same grid: one comparison
    )
)
register(
    Method(
        "baseline_retrain",
        "vitedit.baselines:RetrainBaseline",
        BASELINE_NOTEBOOK,
        ("retrain_epochs", "progress"),
        "baseline 1: retrain on FT-Train plus the errors from the original initialisation",
        context=("params", "data", "split"),
        alias="retrain",
        cli_stage="baseline1",
    )
)
register(
    Method(
        "baseline_finetune",
        "vitedit.baselines:FinetuneErrorsBaseline",
        BASELINE_NOTEBOOK,
        ("baseline_lr", "baseline_epochs", "seed"),
        "baseline 2: fine-tune the model on the errors only",
        context=("stats_cache",),  # a grid over epochs continues one fine-tuning run
        alias="finetune",
        cli_stage="baseline2",
        grid={"baseline_lr": [1e-5, 1e-4, 1e-3]},
    )
)
register(
    Method(
        "baseline_finetune_replay",
        "vitedit.baselines:FinetuneReplayBaseline",
        BASELINE_NOTEBOOK,
        ("baseline_lr", "baseline_epochs", "seed", "replay_weight"),
        "baseline 2 with replay: fine-tune on the errors plus the statistics samples every editor "
        "sees, at the model's own predictions (weight replay_weight)",
        context=("stats_cache",),
        alias="finetune_replay",
        # the errors see ~10-40 steps: learning rate x epochs x how much the replay weighs
        grid={
            "baseline_lr": [1e-4, 1e-3],
            "baseline_epochs": [10, 40],
            "replay_weight": [0.3, 1.0, 3.0],
        },
    )
)
register(
    Method(
        "baseline_finetune_labelled",
        "vitedit.baselines:FinetuneLabelledBaseline",
        BASELINE_NOTEBOOK,
        ("baseline_lr", "baseline_epochs", "seed", "replay_weight"),
        "fine-tune on every labelled Edit-Discovery sample (the errors and the samples not edited, "
        "at their true labels) with the statistics samples replayed (issue 30: edits of features)",
        context=("stats_cache",),
        alias="finetune_labelled",
        # a pilot grid set a priori (issue 30): ~40 steps an epoch on BloodMNIST's ~1,200 samples
        grid={"baseline_lr": [1e-5, 1e-4], "baseline_epochs": [1, 4], "replay_weight": [0.0, 1.0]},
        reads_edit_discovery_rest=True,
        reads_anchor_labels=True,
    )
)
