"""The method registry's machinery: what a :class:`Method` says and the registry's lookups. The
methods themselves are declared in :mod:`vitedit.methods` (import that module: it registers them).

This module imports neither torch nor the editors: the CLI and the sweep read it without paying for
torch (about 2 s per process); :attr:`Method.editor_class` imports the editor when it is needed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# the notebooks that run methods, and the one that evaluates edited models
EDIT_NOTEBOOKS = ("04_edit_alphaedit", "05_edit_head")
EVALUATE_NOTEBOOK = "06_evaluate"
BASELINE_NOTEBOOK = "07_baselines"
# parameters every method shares: which errors are edited and which FT-Train samples build statistics
SHARED_KEYS = ("max_edits", "edit_selection", "edit_pair", "projection_samples")
# keyword arguments the stage passes to an editor besides schema keys (not parameters of the study)
CONTEXT_ARGS = {
    "layers": "edit layers chosen from the tracing result (03_locate)",
    "stats_cache": "where the key statistics are cached and what they depend on "
    "(<checkpoint_dir>/stats, the base checkpoint's sha256)",
    "params": "the run's full parameters (the retrain baseline trains with the original recipe; "
    "head_closed_form_views reads whether the dataset allows flips)",
    "data": "the dataset (the retrain baseline trains on it)",
    "split": "the 4-set split (the retrain baseline trains on FT-Train plus the errors)",
}


@dataclass(frozen=True)
class Method:
    """One editing method or baseline."""

    name: str  # the result's name everywhere (metrics.json, edits/<name>.json, sweep rows)
    editor: str  # "module:Class" of the editor, imported on first use
    notebook: str  # the notebook that runs it
    params: tuple[str, ...]  # schema keys its editor takes (keyword names identical to the keys)
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constant keywords of the editor
    context: tuple[str, ...] = ()  # keyword arguments from CONTEXT_ARGS
    uses_layers: bool = False  # edits the layers chosen by tracing (03_locate's parameters)
    alias: str | None = None  # short name in sweep specs' ``baselines`` list (retrain, finetune)
    name_keys: Mapping[str, str] = field(default_factory=dict)  # parameter -> label in folder names
    # parameter -> (other parameter, value): without effect while the other has that value, so
    # left out of content hashes then (a grid over both plans each distinct edit once)
    inactive_when: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    null_space_key: str | None = None  # the parameter that sets its preserved subspace, if any
    cli_stage: str | None = None  # the original CLI's --stage value that runs it alone
    cli_flag: str | None = None  # the original CLI's flag that selects it (e.g. --closed-form)
    loss_note: str = ""  # why it may lose accuracy on purpose (said beside an accuracy warning)
    # reads the Edit-Discovery samples not edited (as anchors): its figures on them are not out of
    # sample, and the evidence tables leave them out (vitedit.evidence.figures)
    reads_edit_discovery_rest: bool = False
    # reads those samples' true labels too (EditData.anchor_labels): the stages hand them only to a
    # method that declares it (vitedit.stages.edit.run_method)
    reads_anchor_labels: bool = False
    # its strength grid: what a sweep with ``method_grids: registered`` (the benchmark) searches;
    # chosen on the design seeds (reports/benchmark/findings.md, "Strength grids")
    grid: Mapping[str, list] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.notebook == BASELINE_NOTEBOOK

    @property
    def notebooks(self) -> list[str]:
        """What a sweep experiment of this method runs (edit methods are evaluated by 06)."""
        return [self.notebook] if self.is_baseline else [self.notebook, EVALUATE_NOTEBOOK]

    @property
    def inherits(self) -> list[str]:
        """The shared stages an experiment starts from."""
        return ["01_split", "02_train"] + (["03_locate"] if self.uses_layers else [])

    @property
    def editor_keywords(self) -> dict[str, inspect.Parameter]:
        """The editor's keyword arguments, through ``**kwargs`` passed on to a base class (the
        layer editors' shared settings live in :class:`vitedit.editors.layer.LayerEditor`)."""
        out: dict[str, inspect.Parameter] = {}
        for cls in self.editor_class.__mro__:
            if "__init__" not in vars(cls):
                continue
            sig = inspect.signature(vars(cls)["__init__"]).parameters
            out.update({k: v for k, v in sig.items() if k != "self" and v.kind != v.VAR_KEYWORD})
            if not any(v.kind == v.VAR_KEYWORD for v in sig.values()):
                break
        return out

    @property
    def editor_class(self) -> type:
        module, cls = self.editor.split(":")
        return getattr(importlib.import_module(module), cls)

    def kwargs(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """The editor's keyword arguments from the run's parameters (same names)."""
        return {**{k: p[k] for k in self.params}, **self.fixed}

    def build(self, p: Mapping[str, Any], **context: Any):
        """The editor, configured from the parameters ``p`` (a run's, every key resolved: the
        schema is the only source of defaults) and the stage's ``context``; it carries this
        method's name."""
        unknown = set(context) - set(self.context)
        if unknown:
            raise TypeError(
                f"{self.name}: unexpected context {sorted(unknown)}; it takes {list(self.context)}"
            )
        editor = self.editor_class(**self.kwargs(p), **context)
        editor.name = self.name
        return editor


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered twice")
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(REGISTRY)}") from None


def names(notebook: str | None = None, baselines: bool | None = None) -> list[str]:
    """Registered method names (of one notebook; only or without baselines), in registry order."""
    return [
        m.name
        for m in REGISTRY.values()
        if (notebook is None or m.notebook == notebook)
        and (baselines is None or m.is_baseline == baselines)
    ]


def by_notebook_text() -> str:
    """The registered methods per notebook, in words (help texts)."""
    notebooks = dict.fromkeys(m.notebook for m in REGISTRY.values())
    return "; ".join(f"{nb[:2]} {', '.join(names(nb))}" for nb in notebooks)


def by_alias(alias: str) -> Method:
    for m in REGISTRY.values():
        if alias in (m.alias, m.name):
            return m
    raise KeyError(alias)
