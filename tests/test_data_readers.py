"""Generic sources on tiny files written here: npz, CIFAR python pickles, IDX, image folders."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tailwise.data import load_source, read_idx, safe_unpickle


def _write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_loader(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    y_tr = np.arange(12, dtype=np.uint8) % 3
    x_te = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    y_te = np.arange(6, dtype=np.uint8) % 3
    suffix = ".gz" if compress else ""
    for stem, arr in (("train-images-idx3-ubyte", x_tr), ("train-labels-idx1-ubyte", y_tr),
                      ("t10k-images-idx3-ubyte", x_te), ("t10k-labels-idx1-ubyte", y_te)):
        _write_idx(tmp_path / (stem + suffix), arr, 0x08, compress)
    s = load_source("idx", path=tmp_path)
    assert s.train.x.shape == (12, 1, 5, 4) and s.train.x.dtype == torch.uint8
    assert torch.equal(s.train.x[:, 0], torch.from_numpy(x_tr))
    assert s.train.y.tolist() == y_tr.tolist() and s.test.y.tolist() == y_te.tolist()
    assert s.train.num_classes == 3 and s.augment is False


def test_read_idx_other_dtypes_and_errors(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    _write_idx(tmp_path / "a.idx", arr, 0x0C, False)
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.int32 and out.tolist() == arr.tolist()
    floats = np.linspace(0, 1, 4, dtype=np.float32)
    _write_idx(tmp_path / "f.idx", floats, 0x0D, False)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match=r"IDX header says shape \(5,\)"):
        read_idx(tmp_path / "short.idx")


def test_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"IDX file 'train-images-idx3-ubyte'.*not found in"):
        load_source("idx", path=tmp_path)


def _cifar10_folder(root: Path, protocol: int) -> tuple[np.ndarray, list[int]]:
    root.mkdir()
    rng = np.random.default_rng(1)
    all_x, all_y = [], []
    for b in range(1, 3):
        data = rng.integers(0, 256, (4, 3 * 8 * 8), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        all_x.append(data)
        all_y += labels
        with open(root / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data}, f, protocol=protocol)
    test = {b"labels": [1, 2], b"data": rng.integers(0, 256, (2, 192), dtype=np.uint8)}
    with open(root / "test_batch", "wb") as f:
        pickle.dump(test, f, protocol=protocol)
    names = [f"c{i}".encode() for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 192}, f, protocol=protocol)
    return np.concatenate(all_x), all_y


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_python_folder(tmp_path: Path, protocol: int) -> None:
    x, y = _cifar10_folder(tmp_path / "cifar-10-batches-py", protocol)
    s = load_source("cifar-python", path=tmp_path / "cifar-10-batches-py")
    assert s.train.x.shape == (8, 3, 8, 8) and s.train.x.dtype == torch.uint8
    assert torch.equal(s.train.x.reshape(8, -1), torch.from_numpy(x))
    assert s.train.y.tolist() == y and s.test.y.tolist() == [1, 2]
    assert s.train.num_classes == 10 and s.train.class_names == [f"c{i}" for i in range(10)]
    assert s.augment is True


def test_cifar100_python_folder(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 3)):
        blob = {b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
                b"data": rng.integers(0, 256, (n, 3 * 4 * 4), dtype=np.uint8)}
        (root / split).write_bytes(pickle.dumps(blob, protocol=2))
    fine = load_source("cifar-python", path=root)
    coarse = load_source("cifar-python", path=root, label_type="coarse")
    assert fine.train.num_classes == 100 and coarse.train.num_classes == 20
    assert fine.train.x.shape == (6, 3, 4, 4)


def test_restricted_unpickler_refuses_code() -> None:
    evil = pickle.dumps({"f": print})
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global builtins\.print"):
        safe_unpickle(evil)
    ok = safe_unpickle(pickle.dumps({b"a": [1, 2], "b": np.arange(3)}, protocol=2))
    assert ok[b"a"] == [1, 2] and ok["b"].tolist() == [0, 1, 2]


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("dog", "cat"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
                pixels.setdefault((split, cls), []).append(arr)
    (tmp_path / "imgs" / "train" / "cat" / "notes.txt").write_text("not an image")
    s = load_source("image-folder", path=tmp_path / "imgs")
    assert s.train.class_names == ["cat", "dog"]
    assert s.train.x.shape == (6, 3, 6, 5) and s.test.x.shape == (4, 3, 6, 5)
    assert s.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(s.train.x[0].permute(1, 2, 0).numpy(), pixels[("train", "cat")][0])
    resized = load_source("image-folder", path=tmp_path / "imgs", size=(4, 4), mode="L")
    assert resized.train.x.shape == (6, 1, 4, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "r" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="must contain 'train' and 'test' folders"):
        load_source("image-folder", path=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="image folder 'nowhere' not found"):
        load_source("image-folder", path="nowhere")


def test_npz_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (10, 7, 7, 3), dtype=np.uint8),
             y_train=np.arange(10) % 4, x_test=rng.integers(0, 256, (4, 7, 7, 3), dtype=np.uint8),
             y_test=np.arange(4), class_names=np.array(["a", "b", "c", "d"]))
    s = load_source("npz", tmp_path, path="d.npz")  # relative to data_dir
    assert s.train.x.shape == (10, 3, 7, 7) and s.train.class_names == ["a", "b", "c", "d"]
    assert s.augment is True and len(s.mean) == 3
    np.savez(tmp_path / "sig.npz", x_train=rng.normal(size=(8, 12)), y_train=np.arange(8) % 2,
             x_test=rng.normal(size=(2, 12)), y_test=np.array([0, 1]))
    sig = load_source("npz", path=tmp_path / "sig.npz")
    assert sig.train.x.shape == (8, 1, 12) and sig.train.x.dtype == torch.float32 and sig.augment is False
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"missing \['y_train', 'x_test', 'y_test'\]"):
        load_source("npz", path=tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match=r"npz file 'nope\.npz' not found"):
        load_source("npz", tmp_path, path="nope.npz")
