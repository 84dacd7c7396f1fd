"""The cross-fit of the edited errors (issue 27): fold A edits the first ``max_edits`` errors, the
swap (``edit_selection: second``) the next ones at the setting chosen for A; each fold's edit is
judged on the other fold's errors, every one of them once."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from test_evidence import _row

from vitedit import crossfit, editors, evaluation, evidence, methods, models, selection
from vitedit.sweep import fresh, plan
from vitedit.sweep.keys import prep_key
from vitedit.sweep.plan import Experiment, Prep


def test_second_edits_the_errors_after_the_first_max_edits():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    pred = np.array([1, 1, 0, 0, 0, 1, 0, 0, 1, 1])  # errors at 0, 2, 4, 5, 7, 9
    assert selection.select_errors(y, pred, 3).tolist() == [0, 2, 4]
    assert selection.select_errors(y, pred, 3, skip=3).tolist() == [5, 7, 9]
    assert selection.select_errors(y, pred, 3, skip=5).tolist() == [9]
    assert selection.skipped_errors({"edit_selection": "second", "max_edits": 3}) == 3
    assert selection.skipped_errors({"edit_selection": "first", "max_edits": 3}) == 0
    assert selection.skipped_errors({"edit_selection": "pair", "max_edits": 3}) == 0


def test_the_swap_traces_its_own_errors_so_it_has_its_own_shared_stage():
    from vitedit import params

    p = params.resolve({"dataset": "retinamnist"})
    first, second = prep_key(p), prep_key({**p, "edit_selection": "second"})
    assert first == prep_key({**p, "edit_selection": "pair"})  # tracing: the first errors
    assert first != second and second["edit_selection"] == "second"


def _pair(first_rest: str, first_edit: str, second_rest: str, second_edit: str, cid="b"):
    a = {"edit_fixed_mask": first_edit, "ed_rest_fixed_mask": first_rest}
    b = {"edit_fixed_mask": second_edit, "ed_rest_fixed_mask": second_rest, "config_id": cid}
    return a, b


def test_each_folds_edit_is_judged_on_the_other_folds_errors_once():
    # fold A: 3 errors; fold B: 2 errors; a tail of 2 errors neither edits
    # A's held-out errors in set order: B's two, then the tail; B's: A's three, then the tail
    a, b = _pair("yn" + "yy", "yyy", "nny" + "yy", "yn")
    got = crossfit.crossfit(a, b)
    assert got["crossfit_errors"] == 5 and got["crossfit_fixed"] == 2  # the tail counts nowhere
    assert got["crossfit_fixed_mask"] == "yn" + "nny" and got["crossfit_config_id"] == "b"
    assert np.isnan(crossfit.crossfit(a, None)["crossfit_fixed"])
    # not the two folds of one model's errors (a held-out list shorter than the other fold): none
    bad_a, bad_b = _pair("y", "yyy", "nny", "yn")
    assert np.isnan(crossfit.crossfit(bad_a, bad_b)["crossfit_errors"])


def test_the_cross_fit_on_a_trained_models_errors_matches_a_direct_count(trained_toy):
    """Two real edits (head biases moved) of a trained model, judged by the evaluation every method
    gets: the cross-fit read from their per-error outcomes is each edit's accuracy on the other
    fold's errors, counted directly."""
    p, data, split, model = trained_toy
    runner = models.Runner(models.get_config("vit_tiny_test"), 256, "cpu")
    ev = evaluation.Evaluator(data, split, runner, None, 0, 50)
    y, pred, _ = evaluation.predictions(ev, model, "edit_discovery")
    k = len(selection.select_errors(y, pred, None)) // 3
    assert k >= 3, "the toy model makes too few errors for the test"
    fold_a = selection.select_errors(y, pred, k)
    fold_b = selection.select_errors(y, pred, k, skip=k)
    stats = editors.stats_positions(len(split.indices["ft_train"]), 40, 0)
    rows, edited = [], []
    for i, fold in enumerate((fold_a, fold_b)):
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.head.bias[i] += 1.5
        lv = evaluation.four_level(ev, "m", model, other, fold, stats)["levels"]
        rows.append(
            {
                "edit_fixed_mask": lv["edit_samples"]["fixed_mask"],
                "ed_rest_fixed_mask": lv["edit_discovery_set"]["fixed_mask"],
            }
        )
        edited.append(other)
    got = crossfit.crossfit(*rows)
    images = split.images(data, "edit_discovery")
    after = [runner.probs(m, images).numpy().argmax(1) for m in edited]
    direct = np.concatenate([after[0][fold_b] == y[fold_b], after[1][fold_a] == y[fold_a]])
    assert got["crossfit_errors"] == 2 * k
    assert got["crossfit_fixed"] == direct.sum() and 0 < direct.sum() < 2 * k
    assert got["crossfit_fixed_mask"] == "".join("y" if x else "n" for x in direct)


def summary(seeds=(42, 43, 44, 45)) -> pd.DataFrame:
    """a1 best on 42 only, a2 on 43 and 44 (seed 45 fresh); each seed has the swap of both settings,
    the swap of a2 fixing everything (never a reason to choose a2)."""
    rows = []
    for seed in seeds:
        rows.append(_row("a", "a1", seed, 0.9 if seed == 42 else 0.2, 0.0, index=0))
        rows.append(_row("a", "a2", seed, 0.1 if seed == 42 else 0.5, 0.0, index=1))
        for twin, fixed in (("a1", "yn" * 10), ("a2", "y" * 20)):
            rows.append(
                {
                    **_row("a", f"s{twin}", seed, 1.0, 0.0, index=2),
                    "edit_selection": "second",
                    "crossfit_of": twin,
                    "ed_rest_fixed_mask": fixed + "n" * 20,
                }
            )
    s = pd.DataFrame(rows)
    s["edit_selection"] = s.edit_selection.fillna("first")
    s["crossfit_of"] = s.crossfit_of.fillna("")
    return s


def test_a_swap_chooses_nothing_and_is_reported_beside_its_twin():
    oos = evidence.out_of_selection(summary(), budgets=(0.01,))
    assert set(oos.edit_selection) == {"first"}  # no row, no selection of its own
    by_seed = oos.set_index("seed")
    # leave-one-seed-out: 42 at a2 (chosen on 43, 44), 43 and 44 at a1 or a2 as the others say
    assert by_seed.loc[42, "config_id"] == "a2" and by_seed.loc[42, "crossfit_config_id"] == "sa2"
    assert by_seed.loc[45, "config_id"] == "a1"  # mean 0.43 against 0.37 on 42-44
    # fold A's held-out errors begin with fold B's 20: a1's first 20 outcomes are 'y' * 4 + 'n' * 16
    # (test_evidence's _row); a2's swap would fix all 20 of fold A's, a1's fixes 10
    assert by_seed.loc[45, "crossfit_fixed"] == 4 + 10 and by_seed.loc[45, "crossfit_errors"] == 40
    assert by_seed.loc[42, "crossfit_fixed"] == 4 + 20
    fig = evidence.figures(oos)
    conf = fig[fig.role == "confirmation"].iloc[0]
    assert conf.crossfit_generalisation == pytest.approx(14 / 40)
    pairs = evidence.paired(oos, "crossfit_generalisation")
    assert pairs.empty  # one method: nothing to compare, but the figure is there


def test_swaps_run_only_at_the_setting_chosen_for_their_seed(tmp_path):
    s = summary((42, 43, 44))
    design = s[s.edit_selection == "first"]
    assert fresh.chosen_by_seed(design, [42, 43, 44, 45], budgets=(0.01,)) == {
        ("a2", 42),
        ("a1", 43),  # chosen on 42 and 44: a1 0.9 / 0.2 against a2 0.1 / 0.5
        ("a1", 44),
        ("a1", 45),
    }
    design.to_csv(tmp_path / "param_search_summary_d.csv", index=False)
    prep = Prep("p", "p", {})

    def exp(i, cid, seed, twin=""):
        return Experiment(
            i,
            f"{cid}{seed}",
            cid,
            f"{cid}{seed}",
            "head",
            {"dataset": "d", "seed": seed},
            prep,
            crossfit_of=twin,
        )

    exps = [exp(0, c, s) for s in (42, 43, 44) for c in ("a1", "a2")]
    swaps = [exp(1, f"s{c}", s, c) for s in (42, 43, 44, 45) for c in ("a1", "a2")]
    said = []
    got = fresh.planned({"fresh_seeds": "chosen"}, exps + swaps, tmp_path, log=said.append)
    runs = {(e.crossfit_of, e.params["seed"]) for e in got if e.crossfit_of}
    # every budget's choice runs (5 % chooses as 1 % does here)
    assert runs == fresh.chosen_by_seed(design, [42, 43, 44, 45])
    assert ("a2", 42) in runs and ("a1", 42) not in runs and not said
    # with no design results yet, the swaps wait like fresh seeds
    said.clear()
    got = fresh.planned({"fresh_seeds": "chosen"}, exps + swaps, tmp_path / "none", log=said.append)
    assert not any(e.crossfit_of for e in got) and "wait" in said[0]


def test_the_plan_names_each_swaps_twin_setting(tmp_path):
    (tmp_path / "p.yaml").write_text("dataset: retinamnist\nmodel: vit_tiny_test\n")
    spec = {
        "name": "t",
        "params": [str(tmp_path / "p.yaml")],
        "methods": ["head_closed_form"],
        "baselines": [],
        "grid": {"edit_selection": ["first", "second"]},
        "method_grids": {"head_closed_form": {"head_margin": [0.5, 3.0]}},
        "fresh_seeds": "chosen",
        "set": {"max_samples": 30},
    }
    from vitedit.sweep.spec import check_spec

    exps = plan.expand(check_spec(spec))
    firsts = {e.point["head_margin"]: e for e in exps if e.params["edit_selection"] == "first"}
    swaps = [e for e in exps if e.params["edit_selection"] == "second"]
    assert len(swaps) == 2 and not any(e.crossfit_of for e in firsts.values())
    for e in swaps:
        assert e.crossfit_of == firsts[e.point["head_margin"]].config_id != e.config_id
        assert e.prep.id != firsts[e.point["head_margin"]].prep.id  # it traces its own errors


def test_the_swap_is_refused_where_it_would_choose_or_trace_the_other_fold(tmp_path):
    from vitedit.sweep.blocks import SweepError, check_flags

    grid = {"edit_selection": ["first", "second"]}
    with pytest.raises(SweepError, match="fresh_seeds: chosen"):
        check_flags({"grid": grid})
    assert check_flags({"grid": grid, "fresh_seeds": "chosen"})["fresh_seeds"] == "chosen"
    with pytest.raises(SweepError, match="max_samples to at most max_edits"):
        plan.check_crossfit({"max_samples": None, "max_edits": 30}, grid)
    with pytest.raises(SweepError, match="other fold"):
        plan.check_crossfit({"max_samples": 40, "max_edits": 30}, grid)
    plan.check_crossfit({"max_samples": 30, "max_edits": 30}, grid)
    plan.check_crossfit({"max_samples": None, "max_edits": 30}, {"edit_selection": ["first"]})


def test_swaps_choose_nothing_in_the_in_sample_table_and_the_sweeps_selection():
    from vitedit.sweep.collect import in_sample_rows, select

    s = summary()
    for spec in ({}, {"fresh_seeds": "chosen"}):
        rows = in_sample_rows(spec, s).assign(experiment="e")
        assert not evidence.is_swap(rows).any() and len(rows)
        assert len(select(rows)) and not select(rows).config_id.str.startswith("s").any()


def test_methods_are_compared_on_the_cross_fit_and_a_method_reading_the_rest_is_left_out():
    s = summary()
    other = s.copy()
    other["method"] = "b"
    other.loc[other.edit_selection == "second", "ed_rest_fixed_mask"] = "n" * 40
    oos = evidence.out_of_selection(pd.concat([s, other]), budgets=(0.01,))
    pairs = evidence.paired(oos, "crossfit_generalisation")
    row = pairs[pairs.role == "confirmation"].iloc[0]
    assert (row.method_a, row.method_b, row.errors) == ("a", "b", 40)
    assert (row.a_only, row.b_only) == (10, 0)  # a's swap fixes 10 of fold A's errors, b's none
    # a method that reads the samples not edited (an editor or a baseline): no figure on them, no
    # comparison on them
    readers = [n for n in methods.names() if methods.get(n).reads_edit_discovery_rest]
    assert {"head_refit", "baseline_finetune_labelled"} <= set(readers)
    for reader in readers:
        o = oos.copy()
        o.loc[o.method == "b", "method"] = reader
        assert evidence.paired(o, "crossfit_generalisation").empty, reader
        assert len(evidence.paired(o, "efficacy"))
        fig = evidence.figures(o).set_index(["method", "role"])
        refit = fig.loc[(reader, "confirmation")]
        assert np.isnan(refit.generalisation) and np.isnan(refit.crossfit_generalisation)
        assert "not edited" in refit.caveat and np.isfinite(refit.efficacy)


def test_a_swaps_twin_travels_with_its_job(tmp_path):
    from vitedit.sweep.run import experiment_blob

    e = Experiment(0, "x", "c", "n", "head", {"dataset": "d", "seed": 42}, Prep("p", "p", {}))
    e.crossfit_of = "twin"
    blob = experiment_blob(e, tmp_path, {"name": "s"}, None)
    assert blob["crossfit_of"] == "twin"
