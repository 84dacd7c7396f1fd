"""Issue 30's frontier for one dataset: every method's confirmation-seed point on net Test change
against Test regression (:mod:`vitedit.frontier`), from evidence tables, with the retrain's points.

    .venv/bin/python benchmarks/bench_frontier.py dataset=bloodmnist selection=first \\
        evidence=reports/benchmark/evidence.csv,reports/benchmark/pilots/X/evidence.csv \\
        retrain=a.csv,b.csv out=reports/benchmark/pilots/X

``evidence``: evidence.csv files (a sweep folder's or a published one); every row is kept, labelled
by its file's folder (``source``), and the Pareto front is drawn within each source: points of
different base models are not one comparison. ``retrain``: per-seed outputs of
``bench_retrain_reference.py`` (one point per ``errors`` kind). ``choice``: outputs of
``bench_issue30_choice.py`` (its rule's points). Writes ``frontier_<dataset>_<selection>.csv``
and ``.png`` to ``out``.
"""

import sys
from pathlib import Path

import pandas as pd

from vitedit import frontier


def main(argv):
    opts = dict(a.split("=", 1) for a in argv)
    dataset, selection = opts.get("dataset", "bloodmnist"), opts.get("selection", "first")
    files = [Path(f) for f in opts.get("evidence", "reports/benchmark/evidence.csv").split(",")]
    retrain = [Path(f) for f in opts["retrain"].split(",")] if opts.get("retrain") else []
    choices = [Path(f) for f in opts["choice"].split(",")] if opts.get("choice") else []
    gone = [str(f) for f in (*files, *retrain, *choices) if not f.is_file()]
    if gone:
        raise SystemExit(f"no such file: {', '.join(gone)}")
    # a table's folder names its base models: the published ones, or a pilot's
    tag = {f: "published" if f.parent.name == "benchmark" else f.parent.name for f in files}
    parts = []
    for f in files:
        p = frontier.points(pd.read_csv(f), source=tag[f])
        parts.append(p.assign(label=p.method + " " + p.budgets + f" ({tag[f]})"))
    for f in choices:  # bench_issue30_choice.py's outputs: its rule's points, same base models
        c = frontier.choice_points(pd.read_csv(f))
        parts.append(c.assign(source=f.parent.name, label=c.method + f" ({f.parent.name})"))
    if retrain:
        seeds = pd.concat([pd.read_csv(f) for f in retrain], ignore_index=True)
        seeds = seeds[seeds.dataset == dataset]
        for _, g in seeds.groupby("errors", sort=False):
            r = frontier.retrain_reference(g, selection).assign(source=retrain[0].parent.name)
            parts.append(r.assign(label=r.method + f" ({retrain[0].parent.name})"))
    df = pd.concat(parts, ignore_index=True)
    df = df[(df.dataset == dataset) & (df.edit_selection == selection)]
    if df.empty:
        raise SystemExit(f"no confirmation rows for {dataset} / {selection} in those tables")
    df = frontier.mark(df.drop(columns=["goal", "pareto"]))
    df = df.sort_values(["test_regression", "test_delta"]).reset_index(drop=True)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(df.drop(columns="label").round(4).to_string(index=False))
    out = opts.get("out")
    if out:
        stem = Path(out) / f"frontier_{dataset}_{selection}"
        df.to_csv(stem.with_suffix(".csv"), index=False)
        fig = frontier.plot(df, title=f"{dataset}, {selection} errors: confirmation seeds")
        fig.savefig(stem.with_suffix(".png"), dpi=100, bbox_inches="tight")
        print(f"wrote {stem}.csv and .png")
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
