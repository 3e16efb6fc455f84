"""Built-in sources: the shared files, CIFAR-10N, MNIST-1D, the registry and its errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import tailwise.data.sources as sources
from tailwise.data import (
    DATASETS,
    ArrayDataset,
    SourceSplits,
    decode_jpeg_array,
    default_data_dir,
    load_source,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILWISE_CACHE", str(tmp_path / "cache"))


def test_registry_names() -> None:
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar10-exact-subset", "cifar10n", "mnist1d", "npz",
                 "cifar-python", "idx", "image-folder"):
        assert name in DATASETS


def test_mnist(shared_data: Path) -> None:
    s = load_source("mnist", shared_data)
    assert s.train.x.shape == (60000, 1, 28, 28) and s.train.x.dtype == torch.uint8
    assert s.test.x.shape == (10000, 1, 28, 28)
    assert s.train.y.dtype == torch.int64
    assert s.train.class_counts().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert int(s.train.y[0]) == 5 and int(s.test.y[0]) == 7
    assert s.augment is False and s.input_shape == (1, 28, 28)
    assert s.mean[0] == pytest.approx(0.1307, abs=1e-4)


def test_fashion_mnist(shared_data: Path) -> None:
    s = load_source("fashion-mnist", shared_data)
    assert s.train.class_counts().tolist() == [6000] * 10
    assert s.train.class_names is not None and s.train.class_names[9] == "Ankle boot"
    assert int(s.train.y[0]) == 9 and s.augment is False


def test_default_data_dir_finds_shared(shared_data: Path) -> None:
    found = default_data_dir()
    assert found is not None and (found / "mnist.npz").is_file()


def test_cifar10_exact_subset(shared_data: Path) -> None:
    s = load_source("cifar10-exact-subset", shared_data)
    assert s.train.x.shape == (5085, 3, 32, 32) and s.augment is True
    assert s.train.index[:3].tolist() == [0, 1, 2] and int(s.train.index[-1]) == 4 * 10000 + 1016


def test_cifar10_jpeg_slice_decodes_close_to_exact(shared_data: Path) -> None:
    with np.load(shared_data / "cifar10_jpeg.npz", allow_pickle=False) as z:
        x = decode_jpeg_array(z["jpeg_train"], z["jpeg_offsets_train"], start=0, stop=20)
        labels = z["y_train"][:10]
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert labels.tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    with np.load(shared_data / "cifar10_exact_subset.npz", allow_pickle=False) as z:
        exact = z["x_train"][:20]
    err = np.abs(x.astype(np.float64) - exact).mean(axis=(1, 2, 3))
    assert err.max() < 15  # JPEG-75 error, not a mismatched image (~50+)


def test_cifar10n_worse_rate(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fast: stand in for the 60k-image decode with tiny images and the true labels.
    with np.load(shared_data / "cifar10_jpeg.npz", allow_pickle=False) as z:
        y_train, y_test = z["y_train"].astype(np.int64), z["y_test"].astype(np.int64)

    def fake_cifar10(data_dir: Path | None, *, cache: bool = True, workers: int | None = None) -> SourceSplits:
        train = ArrayDataset(torch.zeros(50000, 3, 1, 1, dtype=torch.uint8), torch.from_numpy(y_train), 10)
        test = ArrayDataset(torch.zeros(10000, 3, 1, 1, dtype=torch.uint8), torch.from_numpy(y_test), 10)
        return SourceSplits(train, test, (0.5,) * 3, (0.25,) * 3, (3, 1, 1), True)

    monkeypatch.setattr(sources, "load_cifar10", fake_cifar10)
    s = load_source("cifar10n", shared_data)  # default label_set="worse"
    assert s.train.clean_y is not None
    rate = float((s.train.y != s.train.clean_y).double().mean())
    assert round(100 * rate, 2) == 40.21
    aggre = load_source("cifar10n", shared_data, label_set="aggre")
    assert round(100 * float((aggre.train.y != aggre.train.clean_y).double().mean()), 2) == 9.01
    clean = load_source("cifar10n", shared_data, label_set="clean")
    assert torch.equal(clean.train.y, clean.train.clean_y)
    with pytest.raises(ValueError, match=r"label_set must be one of \[.*'worse'.*\]; got 'noisy'"):
        load_source("cifar10n", shared_data, label_set="noisy")


@pytest.mark.slow
def test_cifar10_full_decode_and_cache(shared_data: Path) -> None:
    import hashlib

    s = load_source("cifar10", shared_data)
    digest = hashlib.sha256(s.train.x.permute(0, 2, 3, 1).contiguous().numpy().tobytes()).hexdigest()
    assert digest == "5aaf8a2cf2e577ff4dbb15e4f368840fab5aca1812bcc69682005f8dc661d466"
    again = load_source("cifar10", shared_data)  # from the cache
    assert torch.equal(again.test.x, s.test.x)
    n = load_source("cifar10n", shared_data)
    assert round(100 * float((n.train.y != n.train.clean_y).double().mean()), 2) == 40.21


def test_mnist1d_small() -> None:
    s = load_source("mnist1d", num_samples=200)
    assert s.train.x.shape == (160, 1, 40) and s.train.x.dtype == torch.float32
    assert s.test.x.shape == (40, 1, 40)
    assert s.augment is False and s.input_shape == (1, 40)
    again = load_source("mnist1d", num_samples=200)  # cached copy is identical
    assert torch.equal(again.train.x, s.train.x) and torch.equal(again.train.y, s.train.y)
    fresh = load_source("mnist1d", num_samples=200, cache=False)
    assert torch.equal(fresh.train.x, s.train.x)


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1000'; expected one of \[.*'mnist'.*'mnist1d'"):
        load_source("cifar1000")


def test_unknown_option_lists_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\] for dataset 'mnist1d'; valid options: "):
        load_source("mnist1d", colour=True)


def test_missing_file_names_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'mnist\.npz' not found in data directory .*" + re.escape(tmp_path.name)):
        load_source("mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar10_jpeg\.npz"):
        load_source("cifar10", tmp_path)
