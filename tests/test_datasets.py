import numpy as np
import pytest

from vitedit import datasets, models
from vitedit.datasets import DataError

from conftest import RETINA_MD5, make_liver, make_npz


def test_known_datasets_cover_the_original_system():
    known = datasets.known_datasets()
    for name in [
        *datasets.ORIGINAL_MEDMNIST,
        "liver4",
        "liver2s",
        "liver2a",
    ]:
        assert name in known
    assert datasets.dataset_info("organamnist").n_channels == 1
    assert datasets.dataset_info("pathmnist").n_classes == 9


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'retinamnistt'.*retinamnist"):
        datasets.dataset_info("retinamnistt")


def test_real_retinamnist_loads_and_checks(retina):
    assert retina.md5 == RETINA_MD5
    assert {s: len(v) for s, v in retina.labels.items()} == {"train": 1080, "val": 120, "test": 400}
    assert (
        retina.images["train"].shape == (1080, 28, 28, 3)
        and retina.images["train"].dtype == np.uint8
    )
    assert retina.info.n_classes == 5 and retina.labels["train"].max() == 4


def test_missing_file_names_file_places_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDIT_HOME", str(tmp_path / "proj"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    with pytest.raises(DataError) as e:
        datasets.locate_medmnist("dermamnist", 64, None)
    msg = str(e.value)
    assert (
        "dermamnist_64.npz" in msg and str(tmp_path / "proj" / "data") in msg and ".medmnist" in msg
    )
    assert "--download" in msg


def test_data_root_priority(tmp_path, monkeypatch):
    proj, home, env, explicit = (tmp_path / d for d in ("proj", "home", "env", "explicit"))
    monkeypatch.setenv("VITEDIT_HOME", str(proj))
    monkeypatch.setenv("HOME", str(home))
    for root in (home / ".medmnist", proj / "data", env, explicit):
        make_npz(root / "bloodmnist.npz", n_classes=8)
    monkeypatch.setenv(datasets.DATA_ENV, str(env))
    assert datasets.locate_medmnist("bloodmnist", 28, str(explicit)).parent == explicit
    assert datasets.locate_medmnist("bloodmnist", 28).parent == env
    monkeypatch.delenv(datasets.DATA_ENV)
    assert datasets.locate_medmnist("bloodmnist", 28).parent == proj / "data"
    (proj / "data" / "bloodmnist.npz").unlink()
    assert datasets.locate_medmnist("bloodmnist", 28).parent == home / ".medmnist"


def test_md5_mismatch_is_refused(tmp_path):
    f = make_npz(tmp_path / "retinamnist.npz")
    with pytest.raises(DataError, match="MD5"):
        datasets.load_medmnist("retinamnist", 28, str(f))
    assert (
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False).info.name
        == "retinamnist"
    )


@pytest.mark.parametrize(
    "override,match",
    [
        ({"val_labels": None}, "lacks the array 'val_labels'"),
        ({"train_images": np.zeros((40, 32, 32, 3), np.uint8)}, "expected"),
        ({"test_labels": np.full((12, 1), 9, np.uint8)}, "out of range"),
        ({"train_labels": np.zeros((39, 1), np.uint8)}, "to match"),
    ],
)
def test_malformed_files_are_refused(tmp_path, override, match):
    f = make_npz(tmp_path / "retinamnist.npz", **override)
    with pytest.raises(DataError, match=match):
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False)


def test_not_a_zip_is_refused(tmp_path):
    f = tmp_path / "retinamnist.npz"
    f.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        datasets.load_medmnist("retinamnist", 28, str(f), verify_md5=False)


def test_grayscale_becomes_three_channels_and_is_resized(tmp_path):
    f = make_npz(tmp_path / "organamnist.npz", channels=1, n_classes=11)
    d = datasets.load_medmnist("organamnist", 28, str(f), verify_md5=False)
    assert d.images["train"].ndim == 3
    cfg = models.get_config("vit_base_patch16_224")
    x = models.preprocess(d.images["train"][:2], cfg)
    assert x.shape == (2, 3, 224, 224)
    assert np.allclose(x[:, 0].numpy(), x[:, 2].numpy())


@pytest.mark.parametrize("variant,n_classes", [("liver4", 4), ("liver2s", 2), ("liver2a", 2)])
def test_liver_variants_and_their_split(tmp_path, variant, n_classes):
    folder = make_liver(tmp_path / "liver", n=40)
    d = datasets.load({"dataset": variant, "data_path": str(folder), "liver_split_seed": 0})
    assert d.info.n_classes == n_classes
    sizes = [len(d.labels[s]) for s in datasets.SPLITS]
    assert sum(sizes) == 40 and sizes == [24, 8, 8]
    assert d.images["train"].dtype == np.float32 and d.images["train"].shape[1:] == (256, 256)
    stage = np.arange(40) % 4
    mapping = np.asarray(datasets.LIVER_VARIANTS[variant][1])
    assert (
        np.bincount(np.concatenate(list(d.labels.values())), minlength=n_classes).tolist()
        == np.bincount(mapping[stage], minlength=n_classes).tolist()
    )
    again = datasets.load({"dataset": variant, "data_path": str(folder), "liver_split_seed": 0})
    assert np.array_equal(again.images["test"], d.images["test"])


@pytest.mark.parametrize(
    "bad,match",
    [("not_dict", "expected a dict"), ("shape", "expected float32"), ("labels", "out of range")],
)
def test_liver_wrong_format_is_refused(tmp_path, bad, match):
    folder = make_liver(tmp_path / "liver", n=12, bad=bad)
    with pytest.raises(DataError, match=match):
        datasets.load({"dataset": "liver4", "data_path": str(folder)})


def test_liver_missing_files_and_path(tmp_path):
    with pytest.raises(DataError, match="needs data_path"):
        datasets.load({"dataset": "liver2s", "data_path": None})
    with pytest.raises(DataError, match="labs.npy"):
        folder = make_liver(tmp_path / "l", n=4)
        (folder / "labs.npy").unlink()
        datasets.load({"dataset": "liver2s", "data_path": str(folder)})


def test_stratified_partition_is_exact_per_class():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    parts = datasets.stratified_partition(labels, (0.6, 0.2, 0.2), seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert np.bincount(labels[parts[0]]).tolist() == [30, 18, 12]
