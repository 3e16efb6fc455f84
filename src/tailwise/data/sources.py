"""Built-in sources: the shared benchmark files and the generated MNIST-1D.

Registered names:

* ``mnist``, ``fashion-mnist``: ``mnist.npz`` / ``fashion_mnist.npz`` (bit-exact, IDX order).
* ``cifar10``: ``cifar10_jpeg.npz`` (all 60k images as JPEG-75 bytes, exact labels), decoded once with
  Pillow and cached as an uncompressed ``.npz`` of ``uint8`` arrays in :func:`tailwise.data.cache_dir`
  (``$TAILWISE_CACHE`` or ``~/.cache/tailwise``), keyed by the source file's SHA-256.
* ``cifar10-exact-subset``: ``cifar10_exact_subset.npz`` (6,102 exact-pixel images; ``index`` holds the
  positions in the official 50k / 10k order).
* ``cifar10n``: the ``cifar10`` images with a CIFAR-10N human label set (``cifar10n_labels.npz``) as the
  training labels and the true labels in ``clean_y``.
* ``mnist1d``: generated offline by ``mnist1d.data.make_dataset`` (never its downloading
  ``get_dataset``), ``float32`` ``(N, 1, 40)``.

Normalisation constants: MNIST and Fashion-MNIST use their training-set mean/std; CIFAR-10 uses the
LDAM-DRW protocol's ``(0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010)``; MNIST-1D uses the
training-set statistics of the generated signals.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from tailwise._validation import check_in_choices, describe
from tailwise.data._io import (
    cache_dir,
    channel_stats,
    find_file,
    images_to_tensor,
    labels_to_tensor,
    load_npz_cache,
    save_npz_atomic,
)
from tailwise.data.arrays import ArrayDataset
from tailwise.data.registry import DATASETS, SourceSplits, default_data_dir_candidates

__all__ = [
    "CIFAR10N_LABEL_SETS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "cache_dir",
    "decode_jpeg_array",
    "load_cifar10",
    "load_cifar10_exact_subset",
    "load_cifar10n",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)

#: option value -> array name in ``cifar10n_labels.npz``.
CIFAR10N_LABEL_SETS = {
    "clean": "clean_label",
    "aggre": "aggre_label",
    "worse": "worse_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
}

_DIGITS = [str(i) for i in range(10)]


def _file(data_dir: Path | None, filename: str) -> Path:
    return find_file(data_dir, filename, default_data_dir_candidates())


def _names(z: np.lib.npyio.NpzFile) -> list[str] | None:
    return [str(s) for s in z["class_names"]] if "class_names" in z.files else None


def _npz_image_source(path: Path, mean: tuple[float, ...], std: tuple[float, ...],
                      class_names: list[str] | None, augment: bool) -> SourceSplits:
    with np.load(path, allow_pickle=False) as z:
        names = _names(z) or class_names
        x_tr, y_tr = images_to_tensor(z["x_train"]), labels_to_tensor(z["y_train"])
        x_te, y_te = images_to_tensor(z["x_test"]), labels_to_tensor(z["y_test"])
    c = len(names) if names is not None else 10
    train = ArrayDataset(x_tr, y_tr, c, names)
    test = ArrayDataset(x_te, y_te, c, names)
    return SourceSplits(train, test, mean, std, train.input_shape, augment)


@DATASETS.register("mnist")
def load_mnist(data_dir: Path | None) -> SourceSplits:
    """MNIST from ``mnist.npz`` (60k/10k, ``uint8`` ``(N, 1, 28, 28)``; no pad-crop/flip augmentation)."""
    return _npz_image_source(_file(data_dir, "mnist.npz"), MNIST_MEAN, MNIST_STD, _DIGITS, augment=False)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(data_dir: Path | None) -> SourceSplits:
    """Fashion-MNIST from ``fashion_mnist.npz`` (60k/10k, ``uint8`` ``(N, 1, 28, 28)``; no augmentation)."""
    return _npz_image_source(_file(data_dir, "fashion_mnist.npz"), FASHION_MEAN, FASHION_STD, None, augment=False)


def _decode_one(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        return np.asarray(img.convert("RGB"))


def decode_jpeg_array(buffer: np.ndarray, offsets: np.ndarray, start: int = 0, stop: int | None = None,
                      workers: int | None = None) -> np.ndarray:
    """Decode concatenated JPEG files ``buffer[offsets[i]:offsets[i + 1]]`` for ``i`` in ``[start, stop)``.

    Args:
        buffer: 1-D ``uint8`` array holding the JPEG files back to back.
        offsets: ``int64`` array of ``N + 1`` file boundaries.
        start: first image to decode.
        stop: one past the last image (default: all).
        workers: decoding threads (default: up to 8, by the CPU count).

    Returns:
        ``uint8`` array ``(stop - start, H, W, 3)`` (RGB, channels-last).
    """
    n = len(offsets) - 1
    stop = n if stop is None else min(int(stop), n)
    start = int(start)
    if not 0 <= start <= stop:
        raise ValueError(f"start must lie in [0, {stop}]; got start={start}")
    raw = np.asarray(buffer, dtype=np.uint8)
    blobs = [raw[offsets[i] : offsets[i + 1]].tobytes() for i in range(start, stop)]
    if workers is None:
        workers = max(1, min(8, os.cpu_count() or 1))
    if workers <= 1 or len(blobs) < 256:
        images = [_decode_one(b) for b in blobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = list(pool.map(_decode_one, blobs, chunksize=256))
    if not images:
        return np.zeros((0, 32, 32, 3), dtype=np.uint8)
    return np.stack(images)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _cifar10_arrays(data_dir: Path | None, cache: bool, workers: int | None) -> dict[str, np.ndarray]:
    path = _file(data_dir, "cifar10_jpeg.npz")
    keys = ("x_train", "y_train", "x_test", "y_test", "class_names")
    cache_file = cache_dir() / f"cifar10_jpeg_decoded_{_sha256(path)[:16]}.npz" if cache else None
    if cache_file is not None:
        cached = load_npz_cache(cache_file, keys)
        if cached is not None and cached["x_train"].shape == (50000, 32, 32, 3):
            return cached
    with np.load(path, allow_pickle=False) as z:
        arrays = {
            "x_train": decode_jpeg_array(z["jpeg_train"], z["jpeg_offsets_train"], workers=workers),
            "y_train": z["y_train"],
            "x_test": decode_jpeg_array(z["jpeg_test"], z["jpeg_offsets_test"], workers=workers),
            "y_test": z["y_test"],
            "class_names": z["class_names"],
        }
    if cache_file is not None:
        # a read-only or full cache folder only costs a re-decode next time
        with contextlib.suppress(OSError):
            save_npz_atomic(cache_file, arrays)
    return arrays


def _cifar10_splits(arrays: dict[str, np.ndarray]) -> SourceSplits:
    names = [str(s) for s in arrays["class_names"]]
    train = ArrayDataset(images_to_tensor(arrays["x_train"], channels_last=True), labels_to_tensor(arrays["y_train"]), 10, names)
    test = ArrayDataset(images_to_tensor(arrays["x_test"], channels_last=True), labels_to_tensor(arrays["y_test"]), 10, names)
    return SourceSplits(train, test, CIFAR10_MEAN, CIFAR10_STD, train.input_shape, augment=True)


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None, *, cache: bool = True, workers: int | None = None) -> SourceSplits:
    """CIFAR-10 from ``cifar10_jpeg.npz`` (JPEG-75 pixels, exact labels, official order).

    Args:
        data_dir: folder holding ``cifar10_jpeg.npz``.
        cache: read / write the decoded arrays in the cache folder (``$TAILWISE_CACHE`` or
            ``~/.cache/tailwise``); the first call decodes 60k JPEGs (seconds) and writes the cache
            atomically.
        workers: decoding threads.
    """
    return _cifar10_splits(_cifar10_arrays(data_dir, cache, workers))


@DATASETS.register("cifar10-exact-subset")
def load_cifar10_exact_subset(data_dir: Path | None) -> SourceSplits:
    """The 5,085 / 1,017 exact-pixel CIFAR-10 images of ``cifar10_exact_subset.npz``.

    ``index`` holds each image's position in the official 50k training / 10k test order.
    """
    with np.load(_file(data_dir, "cifar10_exact_subset.npz"), allow_pickle=False) as z:
        names = _names(z)
        train = ArrayDataset(images_to_tensor(z["x_train"], channels_last=True), labels_to_tensor(z["y_train"]),
                             10, names, index=torch.from_numpy(z["train_index"].astype(np.int64)))
        test = ArrayDataset(images_to_tensor(z["x_test"], channels_last=True), labels_to_tensor(z["y_test"]),
                            10, names, index=torch.from_numpy(z["test_index"].astype(np.int64)))
    return SourceSplits(train, test, CIFAR10_MEAN, CIFAR10_STD, train.input_shape, augment=True)


@DATASETS.register("cifar10n")
def load_cifar10n(data_dir: Path | None, *, label_set: str = "worse", cache: bool = True,
                  workers: int | None = None) -> SourceSplits:
    """CIFAR-10 images with CIFAR-10N human labels (Wei et al., ICLR 2022) as training labels.

    Args:
        data_dir: folder holding ``cifar10_jpeg.npz`` and ``cifar10n_labels.npz``.
        label_set: ``clean``, ``aggre`` (9.01% noise), ``worse`` (40.21%), ``random1``/``2``/``3``
            (17.23/18.12/17.64%).
        cache: as for ``cifar10``.
        workers: as for ``cifar10``.

    The training set's ``clean_y`` holds the true labels; the test set is the clean CIFAR-10 test set.
    """
    check_in_choices("label_set", label_set, list(CIFAR10N_LABEL_SETS))
    label_path = _file(data_dir, "cifar10n_labels.npz")
    splits = load_cifar10(data_dir, cache=cache, workers=workers)
    with np.load(label_path, allow_pickle=False) as z:
        noisy = labels_to_tensor(z[CIFAR10N_LABEL_SETS[label_set]])
        clean = labels_to_tensor(z["clean_label"])
    if noisy.shape != splits.train.y.shape:
        raise ValueError(f"cifar10n labels must have one entry per training image (50000); got {describe(noisy)}")
    if not torch.equal(clean, splits.train.y):
        raise ValueError("cifar10n_labels.npz clean_label does not match the CIFAR-10 training labels (wrong file?)")
    tr = splits.train
    splits.train = ArrayDataset(tr.x, noisy, tr.num_classes, tr.class_names, clean_y=tr.y, index=tr.index)
    return splits


@DATASETS.register("mnist1d")
def load_mnist1d(data_dir: Path | None, *, num_samples: int = 5000, seed: int = 42, cache: bool = True) -> SourceSplits:
    """MNIST-1D generated offline with ``mnist1d.data.make_dataset`` (no download, no file needed).

    Args:
        data_dir: unused (the data is generated).
        num_samples: total number of signals (the package splits 80% train / 20% test; default 5000).
        seed: the generator's seed (package default 42).
        cache: keep the generated arrays in the cache folder (keyed by the generation arguments).

    Returns:
        ``float32`` signals ``(N, 1, 40)`` with the package's values, 10 classes, no augmentation.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 10:
        raise ValueError(f"num_samples must be an integer >= 10; got {num_samples!r}")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist1d source needs the 'mnist1d' package: pip install 'tailwise[data]'") from err
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    keys = ("x", "y", "x_test", "y_test")
    settings = {k: v for k, v in sorted(vars(args).items()) if k != "url"}
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    cache_file = cache_dir() / f"mnist1d_{key}.npz" if cache else None
    arrays = load_npz_cache(cache_file, keys) if cache_file is not None else None
    if arrays is None:
        made = make_dataset(args)
        arrays = {k: np.asarray(made[k]) for k in keys}
        if cache_file is not None:
            with contextlib.suppress(OSError):
                save_npz_atomic(cache_file, arrays)
    train = ArrayDataset(images_to_tensor(arrays["x"].astype(np.float32)), labels_to_tensor(arrays["y"]), 10, _DIGITS)
    test = ArrayDataset(images_to_tensor(arrays["x_test"].astype(np.float32)), labels_to_tensor(arrays["y_test"]),
                        10, _DIGITS)
    mean, std = channel_stats(train.x)
    return SourceSplits(train, test, mean, std, train.input_shape, augment=False)
