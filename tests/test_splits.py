import numpy as np
import pytest

from vitedit import splits
from vitedit.splits import SplitError

from conftest import synthetic_data


def test_four_sets_obey_the_protocol(retina):
    s = splits.make_split(retina, 0.9, 42)
    splits.check_split(s, retina)
    ft, ed = s.indices["ft_train"], s.indices["edit_discovery"]
    assert np.intersect1d(ft, ed).size == 0
    assert np.array_equal(np.sort(np.concatenate([ft, ed])), np.arange(1080))
    assert len(ft) == 972 or abs(len(ft) - 972) <= 5  # stratified rounding per class
    assert len(s.indices["ft_val"]) == 120 and len(s.indices["test"]) == 400
    # stratified: class shares of Edit-Discovery follow official train within one sample per class
    c_all = np.bincount(retina.labels["train"], minlength=5)
    c_ed = np.bincount(s.labels(retina, "edit_discovery"), minlength=5)
    assert np.all(np.abs(c_ed - 0.1 * c_all) <= 1)


def test_same_seed_same_split_other_seed_other_split(retina):
    a, b, c = (splits.make_split(retina, 0.9, seed) for seed in (42, 42, 7))
    assert all(np.array_equal(a.indices[k], b.indices[k]) for k in splits.SETS)
    assert a.digest == b.digest
    assert not np.array_equal(a.indices["edit_discovery"], c.indices["edit_discovery"])
    other_ratio = splits.make_split(retina, 0.8, 42)
    assert other_ratio.digest != a.digest


def test_check_split_catches_violations(retina):
    s = splits.make_split(retina, 0.9, 0)
    s.indices["edit_discovery"] = np.append(s.indices["edit_discovery"], s.indices["ft_train"][0])
    with pytest.raises(SplitError, match="overlap"):
        splits.check_split(s, retina)
    s = splits.make_split(retina, 0.9, 0)
    s.indices["ft_train"] = s.indices["ft_train"][1:]
    with pytest.raises(SplitError, match="make up"):
        splits.check_split(s, retina)


def test_save_and_load_round_trip(tmp_path, retina):
    s = splits.make_split(retina, 0.9, 3)
    splits.save(s, tmp_path, retina)
    t = splits.load(tmp_path, expect={"dataset": "retinamnist", "seed": 3, "ft_train_ratio": 0.9})
    assert t.digest == s.digest
    counts = splits.counts_table(s, retina)
    assert counts["total"].tolist() == [len(s.indices[k]) for k in splits.SETS]
    with pytest.raises(SplitError, match="seed=3"):
        splits.load(tmp_path, expect={"seed": 4})


def test_altered_index_file_is_detected(tmp_path, retina):
    s = splits.make_split(retina, 0.9, 3)
    splits.save(s, tmp_path, retina)
    idx = dict(np.load(tmp_path / splits.INDEX_FILE))
    idx["ft_train"], idx["edit_discovery"] = (
        idx["ft_train"][:-1],
        np.append(idx["edit_discovery"], idx["ft_train"][-1]),
    )
    np.savez(tmp_path / splits.INDEX_FILE, **idx)
    with pytest.raises(SplitError, match="altered"):
        splits.load(tmp_path)


def test_missing_split_says_which_stage_to_run(tmp_path):
    with pytest.raises(SplitError, match="01_split"):
        splits.load(tmp_path)


def test_extreme_ratio_leaving_an_empty_set_is_refused(toy):
    with pytest.raises(SplitError, match="empty"):
        splits.make_split(toy, 0.999, 0)


def test_views_read_only_the_images_asked_for_and_match_the_copies():
    from vitedit import editors
    from vitedit.splits import ImageView

    data = synthetic_data(n_train=60, n_val=10, n_test=10)
    split = splits.make_split(data, 0.8, 0)
    v = split.view(data, "ft_train")
    full = split.images(data, "ft_train")
    assert isinstance(v, ImageView) and len(v) == len(full) and v.shape == full.shape
    np.testing.assert_array_equal(v[3:9], full[3:9])
    np.testing.assert_array_equal(np.asarray(v.take([5, 1])), full[[5, 1]])
    np.testing.assert_array_equal(v[7], full[7])
    calls = []
    orig = type(split).images

    def spy(self, d, name):
        calls.append(name)
        return orig(self, d, name)

    type(split).images = spy
    try:
        ed = editors.edit_data(data, split, np.arange(10), np.array([0, 2]), heldout_keys=5)
    finally:
        type(split).images = orig
    assert calls == []  # never the whole of FT-Train or Edit-Discovery
    np.testing.assert_array_equal(ed.stats_images, full[:10])
    np.testing.assert_array_equal(ed.images, split.images(data, "edit_discovery")[[0, 2]])
    np.testing.assert_array_equal(ed.heldout_images, full[10:15])
