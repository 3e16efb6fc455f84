"""Generic sources for the user's own files: ``.npz`` arrays, CIFAR python pickles, IDX files, image folders.

Registered names and their options:

* ``npz``: ``path`` to an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional
  ``class_names``). Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``; signals ``(N, L)``.
* ``cifar-python``: ``path`` to the CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
  CIFAR-100 (``train``, ``test``, ``meta``; ``label_type`` fine or coarse) python-pickle folder. The
  pickles are read with a restricted unpickler that admits only the numpy array-reconstruction globals.
* ``idx``: ``path`` to a folder of MNIST-style IDX files (``train-images-idx3-ubyte`` etc., gzipped or
  not); the header is parsed here (:func:`read_idx`).
* ``image-folder``: ``path`` to ``root`` with ``root/train/<class>/*.png|jpg`` and
  ``root/test/<class>/*``; classes are the sorted folder names of ``train``.

Every generic source computes the normalisation mean/std from its training inputs and accepts
``augment`` (default: True for 3-channel images, False otherwise).
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tailwise._validation import check_in_choices, describe
from tailwise.data._io import (
    channel_stats,
    images_to_tensor,
    infer_num_classes,
    labels_to_tensor,
    resolve_path,
)
from tailwise.data.arrays import ArrayDataset
from tailwise.data.registry import DATASETS, SourceSplits

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_cifar_python",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "read_cifar_pickle",
    "read_idx",
    "safe_unpickle",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _splits(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, class_names: list[str] | None,
            augment: bool | None, channels_last: bool | None = None, num_classes: int | None = None) -> SourceSplits:
    xt, yt = images_to_tensor(x_tr, name="x_train", channels_last=channels_last), labels_to_tensor(y_tr, name="y_train")
    xs, ys = images_to_tensor(x_te, name="x_test", channels_last=channels_last), labels_to_tensor(y_te, name="y_test")
    if xt.shape[1:] != xs.shape[1:]:
        raise ValueError(f"x_train and x_test must have the same sample shape; got {tuple(xt.shape)} and {tuple(xs.shape)}")
    c = num_classes if num_classes is not None else infer_num_classes(yt, ys, class_names=class_names)
    train = ArrayDataset(xt, yt, c, class_names)
    test = ArrayDataset(xs, ys, c, class_names)
    mean, std = channel_stats(train.x)
    if augment is None:
        augment = xt.ndim == 4 and xt.shape[1] == 3
    return SourceSplits(train, test, mean, std, train.input_shape, bool(augment))


# --------------------------------------------------------------------------------------------- npz


@DATASETS.register("npz")
def load_npz(data_dir: Path | None, *, path: str | Path, channels_last: bool | None = None,
             augment: bool | None = None) -> SourceSplits:
    """Arrays from an ``.npz`` holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and ``class_names``).

    Args:
        data_dir: folder a relative ``path`` may be found in.
        path: the ``.npz`` file (absolute, relative to the working directory or to ``data_dir``).
        channels_last: layout of 4-D images (None: guessed from the shape).
        augment: whether pad-crop/flip suits the data (None: True for 3-channel images).
    """
    file = resolve_path(path, data_dir, what="npz file")
    with np.load(file, allow_pickle=False) as z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise ValueError(f"npz file {str(file)!r} must hold x_train, y_train, x_test, y_test; missing {missing}")
        names = [str(s) for s in z["class_names"]] if "class_names" in z.files else None
        return _splits(z["x_train"], z["y_train"], z["x_test"], z["y_test"], names, augment, channels_last)


# ----------------------------------------------------------------------------------- CIFAR pickles

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits dicts, lists, strings, numbers and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            if name == "ndarray":
                return np.ndarray
            if name == "dtype":
                return np.dtype
            try:
                core = __import__("numpy._core." + module.rsplit(".", 1)[-1], fromlist=[name])
            except ImportError:  # numpy < 2
                core = __import__("numpy.core." + module.rsplit(".", 1)[-1], fromlist=[name])
            return getattr(core, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles store bytes
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name} from a data pickle; only numpy arrays, dicts, lists, "
            "strings and numbers are allowed"
        )


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only builtin containers/scalars and numpy arrays (Python 2 pickles too).

    Raises:
        pickle.UnpicklingError: the pickle refers to any other global (it could run code).
    """
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def read_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR python-version batch file as a dict with ``str`` keys (restricted unpickling)."""
    file = Path(path)
    obj = _str_keys(safe_unpickle(file.read_bytes()))
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR pickle {str(file)!r} must hold a dict; got {type(obj).__name__}")
    return obj


def _text_list(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_batch_arrays(batch: dict[str, Any], label_key: str, file: Path) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"CIFAR batch {str(file)!r} must hold 'data' and {label_key!r}; got keys {sorted(batch)}")
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] % 3:
        raise ValueError(f"CIFAR batch {str(file)!r}: 'data' must be (N, 3*H*W); got {describe(data)}")
    side = round((data.shape[1] // 3) ** 0.5)
    images = data.reshape(-1, 3, side, side)
    return images, np.asarray(batch[label_key], dtype=np.int64)


@DATASETS.register("cifar-python")
def load_cifar_python(data_dir: Path | None, *, path: str | Path, label_type: str = "fine",
                      augment: bool | None = True) -> SourceSplits:
    """CIFAR-10 / CIFAR-100 from the official python-pickle folder.

    Args:
        data_dir: folder a relative ``path`` may be found in.
        path: ``cifar-10-batches-py`` (``data_batch_1``..``5``, ``test_batch``) or ``cifar-100-python``
            (``train``, ``test``).
        label_type: CIFAR-100 only: ``fine`` (100 classes) or ``coarse`` (20 superclasses).
        augment: pad-crop/flip (default True).
    """
    check_in_choices("label_type", label_type, ("fine", "coarse"))
    root = resolve_path(path, data_dir, what="CIFAR python folder")
    if (root / "data_batch_1").is_file():
        train_files = sorted(root.glob("data_batch_*"), key=lambda p: p.name)
        test_files = [root / "test_batch"]
        label_key, meta_file, names_key, num_classes = "labels", root / "batches.meta", "label_names", 10
    elif (root / "train").is_file():
        train_files, test_files = [root / "train"], [root / "test"]
        label_key, meta_file = f"{label_type}_labels", root / "meta"
        names_key, num_classes = f"{label_type}_label_names", (100 if label_type == "fine" else 20)
    else:
        raise FileNotFoundError(
            f"no CIFAR python batches in {str(root)!r}: expected data_batch_1..5 and test_batch (CIFAR-10) "
            "or train and test (CIFAR-100)"
        )
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR batch file {f.name!r} not found in {str(root)!r}")
            x, y = _cifar_batch_arrays(read_cifar_pickle(f), label_key, f)
            xs.append(x)
            ys.append(y)
        parts[split] = (np.concatenate(xs), np.concatenate(ys))
    names = None
    if meta_file.is_file():
        meta = read_cifar_pickle(meta_file)
        if names_key in meta and len(meta[names_key]) == num_classes:
            names = _text_list(meta[names_key])
    return _splits(*parts["train"], *parts["test"], names, augment, channels_last=False, num_classes=num_classes)


# --------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (``.gz``) or not.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian 32-bit size per
    dimension; the data follow in C order, big-endian.

    Raises:
        ValueError: a malformed header or a size that does not match the data.
    """
    file = Path(path)
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(file)!r} is not an IDX file (bad magic {raw[:4].hex()!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(file)!r}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{str(file)!r}: IDX header says shape {shape} ({expected} bytes); got {len(raw) - header} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"IDX file {stem!r} (or {stem + '.gz'!r}) not found in {str(root)!r}")


@DATASETS.register("idx")
def load_idx(data_dir: Path | None, *, path: str | Path | None = None,
             train_images: str = "train-images-idx3-ubyte", train_labels: str = "train-labels-idx1-ubyte",
             test_images: str = "t10k-images-idx3-ubyte", test_labels: str = "t10k-labels-idx1-ubyte",
             num_classes: int | None = None, augment: bool | None = False) -> SourceSplits:
    """MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, ...), each gzipped or not.

    Args:
        data_dir: default folder when ``path`` is None; folder a relative ``path`` may be found in.
        path: the folder holding the four files.
        train_images, train_labels, test_images, test_labels: file names without ``.gz``.
        num_classes: number of classes (default: largest label + 1).
        augment: pad-crop/flip (default False).
    """
    if path is None:
        if data_dir is None:
            raise FileNotFoundError("the idx source needs path=<folder of IDX files> (no data directory found)")
        root = Path(data_dir)
    else:
        root = resolve_path(path, data_dir, what="IDX folder")
    arrays = [read_idx(_idx_file(root, stem)) for stem in (train_images, train_labels, test_images, test_labels)]
    return _splits(*arrays, None, augment, channels_last=False, num_classes=num_classes)


# ------------------------------------------------------------------------------------ image folder


def _read_folder(split_dir: Path, class_names: list[str], size: tuple[int, int] | None, mode: str
                 ) -> tuple[list[np.ndarray], list[int]]:
    from PIL import Image

    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(class_names):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            with Image.open(file) as img:
                img = img.convert(mode)
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.BILINEAR)
                images.append(np.asarray(img))
            labels.append(label)
    return images, labels


def _detect_mode(root: Path) -> str:
    from PIL import Image

    for file in sorted(root.rglob("*")):
        if file.suffix.lower() in IMAGE_EXTENSIONS:
            with Image.open(file) as img:
                if img.mode not in ("L", "1", "I;16", "I", "F"):
                    return "RGB"
    return "L"


@DATASETS.register("image-folder")
def load_image_folder(data_dir: Path | None, *, path: str | Path, size: tuple[int, int] | None = None,
                      mode: str = "auto", augment: bool | None = None) -> SourceSplits:
    """Images from ``path/train/<class>/*`` and ``path/test/<class>/*`` (png, jpg, jpeg, bmp), read with Pillow.

    Args:
        data_dir: folder a relative ``path`` may be found in.
        path: the root folder.
        size: ``(H, W)`` to resize every image to (default: all images must share one size).
        mode: ``"L"`` (1 channel), ``"RGB"`` (3 channels) or ``"auto"`` (RGB unless every image is grayscale).
        augment: pad-crop/flip (default: True for RGB).

    Class names are the sorted folder names under ``train``; labels follow that order.
    """
    check_in_choices("mode", mode, ("auto", "L", "RGB"))
    root = resolve_path(path, data_dir, what="image folder")
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} must contain 'train' and 'test' folders; missing {str(d)!r}")
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not class_names:
        raise ValueError(f"no class folders in {str(train_dir)!r}")
    unknown = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in class_names)
    if unknown:
        raise ValueError(f"test classes {unknown} have no folder in {str(train_dir)!r}; train classes: {class_names}")
    if mode == "auto":
        mode = _detect_mode(root)
    out = {}
    for split, d in (("train", train_dir), ("test", test_dir)):
        images, labels = _read_folder(d, class_names, size, mode)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {str(d)!r}")
        shapes = sorted({im.shape for im in images})
        if len(shapes) > 1:
            raise ValueError(f"images under {str(d)!r} have different sizes {shapes[:4]}; pass size=(H, W) to resize")
        out[split] = (np.stack(images), np.asarray(labels, dtype=np.int64))
    channels_last = mode == "RGB"
    return _splits(*out["train"], *out["test"], class_names, augment, channels_last=channels_last,
                   num_classes=len(class_names))
