"""Fresh seeds at the settings the design seeds chose (a spec's ``fresh_seeds: chosen``).

The evidence protocol (:mod:`vitedit.evidence`) reports a fresh seed, one not in
:data:`~vitedit.evidence.DESIGN_SEEDS`, only at the setting the design seeds chose for its group
(dataset, error selection), method and budget: :func:`vitedit.budget.best` on their results. Its
other grid points are never reported. With ``fresh_seeds: chosen`` a sweep plans a fresh seed's
experiments only at those settings (:func:`chosen_configs`, the same rule on the same seeds), once
the design seeds' whole grid of that dataset has results in the sweep folder: one command runs the
design seeds first, collects them, then plans and runs the fresh seeds (:func:`run_phases`; each
phase is an entry of the sweep log). A cross-fit swap (``edit_selection: second``, whose
``crossfit_of`` names its setting editing the first errors) waits too and runs, on every seed,
only at the setting chosen for that seed (:func:`chosen_by_seed`). The in-sample best-of-grid
table is then computed on the design seeds alone, swaps left out
(:func:`vitedit.sweep.collect.in_sample_rows`: a fresh seed has no grid to take the best of).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import budget, evidence
from .blocks import SweepError
from .collect import collect
from .plan import Experiment
from .run import run_sweep


def is_fresh(e: Experiment) -> bool:
    return int(e.params["seed"]) not in evidence.DESIGN_SEEDS


def waits(e: Experiment) -> bool:
    """Planned once the design grid is in: a fresh seed's experiment, or a cross-fit swap
    (``edit_selection: second``), which runs at the setting chosen for its seed on 'first'."""
    return is_fresh(e) or bool(e.crossfit_of)


def chosen_configs(
    summary: pd.DataFrame,
    budgets: Sequence[float] = budget.BUDGETS,
    design_seeds: Sequence[int] = evidence.DESIGN_SEEDS,
) -> set[str]:
    """The ``config_id`` the design seeds choose per group, method and budget: the settings at which
    :func:`vitedit.evidence.out_of_selection` reports a fresh seed (its confirmation rows)."""
    ok, keys = evidence._seed_rows(summary)
    ok = ok[ok.seed.isin([int(s) for s in design_seeds]) & ~evidence.is_swap(ok)]
    out = set()
    for _, g in ok.groupby([*keys, "method"], sort=False):
        chooser = sorted(int(s) for s in g.seed.unique())
        for b in budgets:
            best = evidence.chosen_setting(g, chooser, b)
            if best is not None:
                out.add(str(best.config_id))
    return out


def chosen_by_seed(
    summary: pd.DataFrame,
    seeds: Sequence[int],
    budgets: Sequence[float] = budget.BUDGETS,
    design_seeds: Sequence[int] = evidence.DESIGN_SEEDS,
) -> set[tuple[str, int]]:
    """``(config_id, seed)``: the setting :func:`vitedit.evidence.out_of_selection` reports each of
    ``seeds`` at, per group, method and budget (a fresh seed: chosen on the design seeds; a design
    seed: on the other design seeds). A cross-fit swap runs at these settings."""
    ok, keys = evidence._seed_rows(summary)
    ok = ok[ok.seed.isin([int(s) for s in design_seeds]) & ~evidence.is_swap(ok)]
    out = set()
    for _, g in ok.groupby([*keys, "method"], sort=False):
        for seed in seeds:
            chooser = evidence.choosers(seed, g.seed.unique(), design_seeds)  # out_of_selection's
            for b in budgets if chooser else ():
                best = evidence.chosen_setting(g, chooser, b)
                if best is not None:
                    out.add((str(best.config_id), int(seed)))
    return out


def _summary(sweep_dir: Path) -> pd.DataFrame:
    files = sorted(Path(sweep_dir).glob("param_search_summary_*.csv"))
    return pd.concat([pd.read_csv(f) for f in files]) if files else pd.DataFrame()


def _fresh_plan(exps: Sequence[Experiment], sweep_dir: Path) -> tuple[list, list[str]]:
    """The fresh experiments at the design seeds' choices and the cross-fit swaps at their seed's
    choice, and the datasets whose design grid has no results yet (their experiments wait)."""
    fresh = [e for e in exps if waits(e)]
    summary = _summary(sweep_dir)
    design = summary[summary.seed.isin(evidence.DESIGN_SEEDS)] if len(summary) else summary
    keep, waiting = [], []
    for ds in dict.fromkeys(e.dataset for e in fresh):
        mine = [e for e in fresh if e.dataset == ds]
        done = design[design.dataset == ds] if len(design) else design
        # every setting at every design seed with results (a setting that ran on 42 but not yet
        # on 43 is not done: choosing without it would choose on fewer seeds than are coming)
        seeds = sorted({int(x) for x in done.get("seed", [])})
        have = set(zip(done.get("config_id", []), done.get("seed", [])))
        wanted = {e.crossfit_of or e.config_id for e in mine}  # a swap: its 'first' setting
        missing = {c for c in wanted if not seeds or any((c, x) not in have for x in seeds)}
        if missing:
            waiting.append(f"{ds} ({len(missing)} of {len(wanted)} settings)")
            continue
        chosen = chosen_configs(done)
        per_seed = chosen_by_seed(done, sorted({int(e.params["seed"]) for e in mine}))
        keep += [
            e
            for e in mine
            if (
                (e.crossfit_of, int(e.params["seed"])) in per_seed
                if e.crossfit_of
                else e.config_id in chosen
            )
        ]
    return keep, waiting


def planned(spec: dict, exps: Sequence[Experiment], sweep_dir: Path, log=print) -> list:
    """What a run of the sweep does now: every experiment, or with ``fresh_seeds: chosen`` the
    design seeds' and the fresh seeds' at the settings chosen (those whose design grid is not
    done yet wait, said in one line)."""
    if spec.get("fresh_seeds", "grid") != "chosen":
        return list(exps)
    keep, waiting = _fresh_plan(exps, sweep_dir)
    if waiting:
        log(f"fresh seeds and swaps wait for the design seeds' results: {', '.join(waiting)}")
    return [e for e in exps if not waits(e)] + keep


def run_phases(spec: dict, exps: Sequence[Experiment], sweep_dir: Path, executor, *a, **kw) -> dict:
    """:func:`~vitedit.sweep.run.run_sweep`, in two phases with ``fresh_seeds: chosen``: the
    design seeds' experiments, then (collected) the fresh seeds' at the design seeds' choices.
    A fresh seed whose dataset has no design results after the first phase is an error."""
    if spec.get("fresh_seeds", "grid") != "chosen":
        return run_sweep(spec, exps, sweep_dir, executor, *a, **kw)
    design = [e for e in exps if not waits(e)]
    counts = run_sweep(spec, design, sweep_dir, executor, *a, **kw) if design else {}
    if not any(waits(e) for e in exps):
        return counts
    if design or any(Path(sweep_dir).glob("runs/*/*/job.json")):  # the summary as it is now
        collect(sweep_dir)
    keep, waiting = _fresh_plan(exps, sweep_dir)
    if waiting:
        raise SweepError(
            "fresh seeds run at the settings the design seeds chose "
            f"({', '.join(map(str, evidence.DESIGN_SEEDS))}), but the design grid has no results "
            f"for {', '.join(waiting)} in {sweep_dir}: run the design seeds first (--seeds "
            f"{' '.join(map(str, evidence.DESIGN_SEEDS))})"
        )
    second = run_sweep(spec, keep, sweep_dir, executor, *a, **kw) if keep else {}
    return {k: counts.get(k, 0) + second.get(k, 0) for k in counts.keys() | second.keys()}
