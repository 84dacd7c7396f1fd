"""Token x layer tracing (regions of patches per layer) and confusion-pair editing (issue 12)."""

import numpy as np
import pandas as pd
import pytest

from vitedit import evaluation, locate, models, params, selection
from vitedit.locate import LocateError
from vitedit.params import ParamError
from vitedit.selection import SelectionError

from conftest import tiny_vit


@pytest.fixture(scope="module")
def tiny():
    m, cfg, img = tiny_vit(1)
    return m, cfg, models.preprocess(img, cfg)


def test_regions_partition_the_patch_grid():
    for n, g in [(49, 3), (16, 2), (196, 4), (49, 7), (49, 1)]:
        got = np.concatenate(
            [locate.region_patches(n, g, i, j) for i in range(g) for j in range(g)]
        )
        assert sorted(got.tolist()) == list(range(n))  # every patch exactly once
    # row-major from the top left: the first region of a 7 x 7 grid in 3 x 3 is rows/cols 0..2
    assert locate.region_patches(49, 3, 0, 0).tolist() == [0, 1, 2, 7, 8, 9, 14, 15, 16]
    m = locate.token_mask(50, "g3r2c2")
    assert not m[0] and m[1:].sum() == 4 and m[1 + 48]  # bottom-right 2 x 2 block, never CLS
    with pytest.raises(LocateError, match="square"):
        locate.region_patches(50, 3, 0, 0)
    with pytest.raises(LocateError, match="between 1"):
        locate.region_patches(49, 8, 0, 0)


def test_batched_region_trace_equals_one_restoration_per_pass(tiny):
    m, _, x = tiny
    rs = locate.region_restorations(len(m.blocks), 2)
    assert len(rs) == len(m.blocks) * 5 and {r.kind for r in rs} == {"block"}
    noise = locate.make_noise(5, (m.patch_embed.num_patches, m.embed_dim), 1.0, 0)
    fast = locate.trace_sample(m, x, rs, noise, max_rows=17)
    ref = locate.trace_reference(m, x, rs, noise)
    assert (fast["restored"] - ref["restored"]).abs().max() <= 1e-5
    # restoring every region plus CLS at one layer is restoring the whole state: the clean output
    whole = locate.trace_sample(m, x, [locate.Restoration((0,), "block", "all")], noise)
    assert (whole["restored"][0] - fast["clean"]).abs().max() <= 1e-5


def _importance():
    rows = []
    for sample, best_layer in [(0, 1), (1, 1), (2, 0)]:
        for layer in range(3):
            for scope in locate.region_scopes(2):
                ie = 0.5 if (layer == best_layer and scope == "g2r1c0") else 0.1
                if scope == "cls":
                    ie = 0.3 * layer
                rows.append(
                    dict(
                        sample=sample,
                        true_label=0,
                        pred_label=1,
                        layer=layer,
                        layers=str(layer),
                        kind="block",
                        scope=scope,
                        ie=ie,
                        te=1.0,
                        te_valid=True,
                        norm_effect=ie,
                    )
                )
    return pd.DataFrame(rows)


def test_region_max_ranks_the_layer_where_one_region_carries_the_decision():
    imp = _importance()
    best = locate.region_max_effects(imp)
    assert set(best.scope) == {locate.REGION_MAX} and len(best) == 9  # per sample and layer
    stats = locate.layer_statistics(pd.concat([imp, best]))
    d = params.defaults()
    keys = ("edit_layers", "no_astra_layers", "rank_kind")
    choice = locate.choose_edit_layers(
        stats, 3, num_edit_layers=1, rank_scope=locate.REGION_MAX, **{k: d[k] for k in keys}
    )
    assert choice["layers"] == [1]  # two of three errors peak at layer 1 (CLS is left out)
    table = locate.region_grid_table(imp)
    assert list(table.index) == locate.region_scopes(2) and list(table.columns) == [0, 1, 2]
    assert table.loc["cls", 2] == pytest.approx(0.6)


def test_region_ranking_needs_the_region_trace():
    with pytest.raises(ParamError, match="trace_regions > 0"):
        params.resolve({"rank_scope": "region_max", "rank_kind": "block"})
    params.resolve({"rank_scope": "region_max", "trace_regions": 3})


def test_pair_selection_takes_the_most_frequent_confusion_deterministically():
    y = np.array([0, 0, 1, 2, 2, 2, 1, 2, 0])
    p = np.array([1, 1, 1, 0, 0, 1, 0, 0, 2])
    assert selection.confusion_pairs(y, p)[:2] == [(2, 0, 3), (0, 1, 2)]
    pos, pair = selection.select_pair_errors(y, p, 2)
    assert pair == (2, 0) and pos.tolist() == [3, 4]  # set order, capped at max_edits
    pos, pair = selection.select_pair_errors(y, p, None, [0, 1])
    assert pair == (0, 1) and pos.tolist() == [0, 1]
    with pytest.raises(SelectionError, match="outside"):
        selection.select_pair_errors(y, p, None, [0, 9], n_classes=3)
    with pytest.raises(SelectionError, match="two different"):
        selection.select_pair_errors(y, p, None, [1, 1])
    assert selection.select_pair_errors(y, y, 5)[1] is None  # no errors: nothing to edit
    with pytest.raises(ParamError, match="edit_selection: pair"):
        params.resolve({"edit_pair": [0, 1]})


def test_pair_generalisation_counts_same_pair_fixes_and_breaks_in_the_classes_involved():
    # edited errors: two of pair (0 -> 1); Test: 3 errors of that pair, 1 of another pair
    y = np.array([0, 0, 0, 2, 0, 1, 1, 2])
    before = np.array([1, 1, 1, 1, 0, 1, 1, 2])
    after = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    g = evaluation.pair_generalisation(np.array([0, 0]), np.array([1, 1]), y, before, after)
    assert g["edited_pairs"] == "0>1"
    assert g["same_pair_errors"] == 3 and g["same_pair_wrong_to_correct"] == 2
    assert g["same_pair_fix_rate"] == pytest.approx(2 / 3)
    # classes 0 and 1 were right at positions 4, 5, 6; position 5 broke; class 2 is not involved
    assert g["pair_classes_correct"] == 3 and g["pair_classes_correct_to_wrong"] == 1
    none = evaluation.pair_generalisation(np.array([]), np.array([]), y, before, after)
    assert none["same_pair_errors"] == 0 and np.isnan(none["same_pair_fix_rate"])
