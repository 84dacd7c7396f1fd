"""The sweep's order of work: the costliest shared stages and units first (longest-processing-time
scheduling), so no long training or unit runs alone on 2 cores at the end."""

import json

import numpy as np

from vitedit import params
from vitedit.sweep import run
from vitedit.sweep.jobs import longest_first, prep_cost, unit_cost
from vitedit.sweep.plan import Experiment, Prep


def _npz(path, n_train):
    x = np.zeros((1, 28, 28), np.uint8)
    y = np.zeros((1, 1), np.uint8)
    np.savez(
        path,
        train_images=np.zeros((n_train, 28, 28), np.uint8),
        train_labels=y.repeat(n_train, 0),
        val_images=x,
        val_labels=y,
        test_images=x,
        test_labels=y,
    )
    return str(path)


class Recorder:
    """An executor that records the order it was given and runs nothing."""

    name, workers, timeout = "recorder", 2, None

    def __init__(self):
        self.order = []

    def map(self, jobs):
        self.order = [json.loads(open(j).read())["name"] for j in jobs]
        return iter(())


def test_shared_stages_start_with_the_largest_training(tmp_path):
    small = params.resolve(
        {"dataset": "retinamnist", "epochs": 30, "data_path": _npz(tmp_path / "r.npz", 100)}
    )
    big = params.resolve(
        {"dataset": "bloodmnist", "epochs": 24, "data_path": _npz(tmp_path / "b.npz", 400)}
    )
    longer = params.resolve(
        {"dataset": "bloodmnist", "epochs": 48, "data_path": str(tmp_path / "b.npz")}
    )
    assert (prep_cost(small), prep_cost(big), prep_cost(longer)) == (3000, 9600, 19200)
    missing = params.resolve({"dataset": "bloodmnist", "data_path": str(tmp_path / "none.npz")})
    assert prep_cost(missing) == 0  # no estimate: the order is kept
    preps = {n: Prep(n, n, p) for n, p in (("small", small), ("big", big), ("longer", longer))}
    ex = Recorder()
    run._run_preps(
        {"name": "t"}, preps, tmp_path / "sweep", ex, log=lambda *a: None, progress=False
    )
    assert ex.order == ["longer", "big", "small"]


def test_units_start_with_the_costliest(tmp_path):
    sweep = tmp_path / "sweep"
    files, sizes = {}, {"small": (1000, 5), "big": (17000, 2), "mid": (17000, 1)}
    for name, (n_images, n_jobs) in sizes.items():
        prep = Prep(name, name, {})
        prep.folder(sweep).mkdir(parents=True)
        meta = {"sizes": {"ft_train": n_images - 100, "test": 100}}
        (prep.folder(sweep) / "split_meta.json").write_text(json.dumps(meta))
        for j in range(n_jobs):
            e = Experiment(j, f"{name}{j}", f"{name}{j}", f"{name}{j}", "head", {}, prep)
            files[str(tmp_path / f"{name}{j}.json")] = e
    assert unit_cost(Prep("big", "big", {}).folder(sweep), 2) == 34000
    units = run.unit_jobs(files, sweep)
    assert [u.split("/")[-3] for u in units] == ["big", "mid", "small"]
    assert longest_first([1, 3, 2, 3], lambda x: x) == [3, 3, 2, 1]


def test_a_units_layer_edits_run_grouped_by_layer_choice_then_errors(tmp_path):
    """The cached hidden states hold one block at a time: a unit whose layer edits alternate
    between layer choices recomputes them at every experiment (40 s a BloodMNIST point)."""
    prep = Prep("p", "p", {})
    files = {}
    names = iter(range(100))
    for l2 in (0.3, 1.0, 3.0):  # the name sorts by L2 first, the layer choice last
        for sel in ("first", "pair"):
            for scope in ("all", "region_max"):
                for method in ("alphaedit", "memit") if scope == "all" else ("alphaedit",):
                    i = next(names)
                    p = {"L2": l2, "edit_selection": sel, "rank_scope": scope, "seed": 42}
                    name = f"{method}_L2{l2}_edit_selection-{sel}_rank_scope-{scope}"
                    files[str(tmp_path / f"{i}.json")] = Experiment(
                        i, name, name, name, method, p, prep
                    )
    files[str(tmp_path / "h.json")] = Experiment(99, "h", "h", "h", "head", {"seed": 42}, prep)
    units = run.unit_jobs(files, tmp_path / "sweep")
    assert [u.split("/")[-2] for u in units] == ["04_edit_alphaedit", "05_edit_head"]
    order = [files[f] for f in units[next(iter(units))]]
    runs = [(e.params["rank_scope"], e.params["edit_selection"]) for e in order]
    changes = sum(a != b for a, b in zip(runs, runs[1:]))
    assert changes == 3  # all/first, all/pair, region_max/first, region_max/pair: one run each


def test_a_seeds_unit_is_split_in_parts_that_two_workers_share_evenly(tmp_path):
    """Three design seeds' units on 2 workers left one worker idle for a whole unit (a third of
    the phase): a unit is split into its head edits, layer edits and each error selection's
    baselines, costliest first; a replay point of more epochs stays in the process of the point of
    fewer epochs it continues from (same errors), after it."""
    sweep, files, names = tmp_path / "sweep", {}, iter(range(1000))

    def add(method, prep, **p):
        i = next(names)
        e = Experiment(i, f"{method}{i}", f"{method}{i}", f"{method}{i}_{p}", method, p, prep)
        files[str(tmp_path / f"{i}.json")] = e

    for seed in (42, 43, 44):
        prep = Prep(f"s{seed}", f"s{seed}", {})
        prep.folder(sweep).mkdir(parents=True)
        (prep.folder(sweep) / "split_meta.json").write_text(json.dumps({"sizes": {"a": 100}}))
        for sel in ("first", "pair"):
            add("head_closed_form", prep, edit_selection=sel, seed=seed)
            add("alphaedit", prep, edit_selection=sel, seed=seed)
            for epochs in (40, 10):
                p = dict(edit_selection=sel, seed=seed, baseline_epochs=epochs)
                add("baseline_finetune_replay", prep, **p)
    units = run.unit_jobs(files, sweep)
    parts = [tuple(u.split("/")[-3:-1]) for u in units]
    assert len(parts) == 12 and len(set(parts)) == 12  # 3 seeds x (head, layer, 2 baselines)
    kinds = [part.split("_")[1] for _, part in parts]
    assert kinds == ["baselines"] * 6 + ["edit"] * 6  # costliest first: baselines, layer, head
    assert [part for _, part in parts[6:9]] == ["04_edit_alphaedit"] * 3
    for u, jobs in units.items():
        assert json.loads(open(u).read())["jobs"] == jobs
        exps = [files[f] for f in jobs]
        assert len({e.params["seed"] for e in exps}) == 1  # one seed's model per process
        if "baselines" in u:
            assert len({e.params["edit_selection"] for e in exps}) == 1
            assert [e.params["baseline_epochs"] for e in exps] == [10, 40]
