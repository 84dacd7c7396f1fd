import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
from pathlib import Path

import numpy as np
import pytest

from vitedit import datasets, paths
from vitedit.datasets import Data, DatasetInfo

ROOT = paths.project_root()
SHARED = ROOT.parent / "shared" / "data" / "retinamnist.npz"
RETINA_MD5 = "bd4c0672f1bba3e3a89f0e4e876791e4"


def pytest_configure(config):
    """One share of the cores per pytest-xdist worker, for torch here and in every child process.

    `make test` runs TEST_WORKERS workers, each starting notebook kernels and CLI subprocesses (they
    inherit OMP_NUM_THREADS). With torch's default (a thread per core) in each, the cores are
    oversubscribed and torch's small-matrix work waits on the other threads: the batched-tracer
    test took 38 s with 2 threads beside one busy process, 0.3 s with 1. A value set outside wins.
    """
    if not hasattr(config, "workerinput"):
        return  # the controller (its children are the workers) or a run without xdist
    workers = config.workerinput["workercount"]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def retina_path() -> Path:
    """The official RetinaMNIST file (data/ link made by `make setup`, or ../shared/data)."""
    for p in (ROOT / "data" / "retinamnist.npz", SHARED):
        if p.is_file():
            return p.resolve()
    if os.environ.get("CI"):
        pytest.fail(f"RetinaMNIST not found at {ROOT / 'data'} or {SHARED}; CI must provide it")
    pytest.skip("real RetinaMNIST file not available on this machine")


@pytest.fixture(scope="session")
def retina(retina_path) -> Data:
    return datasets.load_medmnist("retinamnist", 28, str(retina_path))


def make_npz(path: Path, n=(40, 10, 12), size=28, channels=3, n_classes=5, seed=0, **overrides):
    """A small MedMNIST-format file; ``overrides`` replace or (with None) drop arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        shape = (k, size, size) if channels == 1 else (k, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % n_classes).astype(np.uint8).reshape(-1, 1)
    for key, val in overrides.items():
        if val is None:
            arrays.pop(key)
        else:
            arrays[key] = val
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def make_liver(folder: Path, n=30, seed=0, bad=None):
    """MERIT-format liver data: imgs.npy (object array of {'4': (256,256,1) float32}), labs.npy."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    imgs = np.empty(n, dtype=object)
    for i in range(n):
        imgs[i] = {"4": rng.standard_normal((256, 256, 1)).astype(np.float32)}
    labs = np.arange(n) % 4
    if bad == "not_dict":
        imgs[3] = np.zeros((256, 256, 1), np.float32)
    elif bad == "shape":
        imgs[2] = {"4": np.zeros((256, 256), np.float32)}
    elif bad == "labels":
        labs[5] = 7
    np.save(folder / "imgs.npy", imgs, allow_pickle=True)
    np.save(folder / "labs.npy", labs)
    return folder


def synthetic_data(n_train=120, n_val=40, n_test=40, n_classes=3, seed=0) -> Data:
    """Learnable toy data: class c has a bright c-th third of the image."""
    rng = np.random.default_rng(seed)

    def make(k):
        y = np.arange(k) % n_classes
        x = rng.integers(0, 90, (k, 28, 28, 3)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, c * 9 : (c + 1) * 9] += 120
        return x, y.astype(np.int64)

    parts = {s: make(k) for s, k in zip(("train", "val", "test"), (n_train, n_val, n_test))}
    info = DatasetInfo(
        "toy", "medmnist", "multi-class", 3, tuple(f"c{i}" for i in range(n_classes))
    )
    return Data(
        info,
        {s: v[0] for s, v in parts.items()},
        {s: v[1] for s, v in parts.items()},
        Path("/toy.npz"),
        "0" * 32,
    )


def tiny_vit(n_images: int):
    """An untrained ``vit_tiny_test`` (3 classes, seeded), its config and ``n_images`` random uint8 images."""
    import torch

    from vitedit import models

    torch.manual_seed(0)
    m = models.build_model("vit_tiny_test", 3).eval()
    imgs = np.random.default_rng(0).integers(0, 255, (n_images, 28, 28, 3), dtype=np.uint8)
    return m, models.get_config("vit_tiny_test"), imgs


@pytest.fixture
def toy():
    return synthetic_data()


def toy_params(checkpoint_dir, **kw) -> dict:
    """Parameters of a seconds-long training of the tiny model on :func:`synthetic_data`."""
    from vitedit import params

    p = params.defaults()
    p.update(
        {
            "model": "vit_tiny_test",
            "epochs": 3,
            "batch_size": 32,
            "lr": 3e-3,
            "patience": 0,
            "seed": 0,
            "ft_train_ratio": 0.8,
            "dataset": "toy",
            "checkpoint_dir": str(checkpoint_dir),
        },
        **kw,
    )
    return p


@pytest.fixture(scope="session")
def trained_toy(tmp_path_factory):
    """(params, data, split, model) of the tiny model trained on the toy data (shared, read-only)."""
    from vitedit import splits, train

    data = synthetic_data(n_train=150, n_val=45, n_test=45)
    split = splits.make_split(data, 0.8, 0)
    p = toy_params(tmp_path_factory.mktemp("toy_ckpt"))
    r = train.fit(p, data, split, progress=False, log=lambda *a: None)
    return p, data, split, r.model


# The integration files, longest first (seconds measured with `--junitxml` on 2 cores): with
# `make test`'s `--dist loadfile --no-loadscope-reorder` pytest-xdist hands out whole files in
# this order, so the long ones start at once and the many short files fill the gaps (xdist's own
# order, by number of tests, started them last)
LONGEST_FIRST = (
    "test_study.py",
    "test_adding_a_method.py",
    "test_sweep_resilience.py",
    "test_study_runs.py",
    "test_benchmark.py",
    "test_sweep_run.py",
    "test_train.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable
