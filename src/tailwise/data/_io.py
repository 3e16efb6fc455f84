"""Private helpers of the data sources: array layout, statistics, file lookup and the on-disk cache."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import describe


def images_to_tensor(x: np.ndarray, *, name: str = "x", channels_last: bool | None = None) -> Tensor:
    """Arrange an image / signal array as a channels-first tensor.

    ``(N, H, W)`` -> ``(N, 1, H, W)``; ``(N, H, W, C)`` -> ``(N, C, H, W)``; ``(N, C, H, W)`` kept (unless
    ``channels_last`` is given, the channel axis is the end one of size 1, 3 or 4, the smaller if both are); ``(N, L)`` -> ``(N, 1, L)``. ``uint8`` stays ``uint8``; other dtypes become
    ``float32``.
    """
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, None, :]
    elif x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        if channels_last is None:
            # channels are the small axis (1, 3 or 4); when both ends could be, the smaller one is
            channels_last = x.shape[-1] in (1, 3, 4) and (x.shape[1] not in (1, 3, 4) or x.shape[-1] <= x.shape[1])
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{name} must have shape (N, L), (N, H, W), (N, H, W, C) or (N, C, H, W); got {describe(x)}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x))


def labels_to_tensor(y: np.ndarray, *, name: str = "y") -> Tensor:
    """1-D integer labels as an ``int64`` tensor."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D labels; got {describe(y)}")
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{name} must hold integer class labels; got {describe(y)}")
    return torch.from_numpy(y.astype(np.int64))


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``x`` ``(N, C, ...)``; ``uint8`` is scaled by 1/255."""
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64).transpose(0, 1).reshape(c, -1) * scale
        total += part.sum(1)
        total_sq += (part * part).sum(1)
        count += part.shape[1]
    if count == 0:
        return tuple([0.0] * c), tuple([1.0] * c)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    std = var.sqrt().clamp_min(1e-8)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def infer_num_classes(*labels: Tensor, class_names: list[str] | None = None) -> int:
    """``len(class_names)`` when given, else the largest label + 1."""
    if class_names is not None:
        return len(class_names)
    top = max((int(y.max()) for y in labels if y.numel()), default=0)
    return top + 1


def find_file(data_dir: Path | None, filename: str, searched: list[Path] | None = None) -> Path:
    """``data_dir / filename``, or a :class:`FileNotFoundError` naming the file and the folders searched."""
    if data_dir is not None:
        path = Path(data_dir) / filename
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"data file {filename!r} not found in data directory {str(Path(data_dir))!r} (looked for {str(path)!r}); "
            "pass data_dir=... (--data-dir) pointing at the folder that holds it"
        )
    where = ", ".join(repr(str(p)) for p in (searched or [])) or "none"
    raise FileNotFoundError(
        f"data file {filename!r} not found: no data directory was given and none of the default locations "
        f"exists (searched: {where}); pass data_dir=... (--data-dir) or set TAILWISE_DATA_DIR"
    )


def resolve_path(path: str | Path, data_dir: Path | None, *, what: str = "path") -> Path:
    """An absolute ``path``, or one found relative to the working directory or ``data_dir``."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [p, *([Path(data_dir) / p] if data_dir is not None else [])]
    for cand in candidates:
        if cand.exists():
            return cand
    raise FileNotFoundError(
        f"{what} {str(path)!r} not found (searched: {', '.join(repr(str(c)) for c in candidates)})"
    )


def cache_dir() -> Path:
    """The cache folder: ``$TAILWISE_CACHE`` or ``~/.cache/tailwise``."""
    env = os.environ.get("TAILWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tailwise"


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npz_cache(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing, unreadable or lacks a key."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if not all(k in z.files for k in keys):
                return None
            return {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError):
        return None
