"""The dataset registry: named sources that load a train and a test :class:`ArrayDataset`.

A source is a function ``loader(data_dir: Path | None, **options) -> SourceSplits`` registered in
:data:`DATASETS` under a name (``mnist``, ``cifar10``, ``npz``, ...); :func:`load_source` resolves the
data folder, checks the options against the loader's signature and calls it.

The data folder defaults to :func:`default_data_dir`: ``$TAILWISE_DATA_DIR`` when set, else
``../shared/data`` relative to the working directory, else ``../shared/data`` relative to the
repository root (when tailwise runs from a source checkout), the first that exists.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailwise.data.arrays import ArrayDataset
from tailwise.registry import Registry

__all__ = ["DATASETS", "SourceSplits", "default_data_dir", "default_data_dir_candidates", "load_source"]


@dataclass
class SourceSplits:
    """What a dataset source returns.

    Attributes:
        train: the source's training set (in file order).
        test: the source's test set (in file order).
        mean: per-channel mean of the inputs after scaling ``uint8`` by 1/255 (for normalisation).
        std: per-channel standard deviation (same scale).
        input_shape: shape of one input, e.g. ``(3, 32, 32)`` or ``(1, 40)``.
        augment: whether random pad-crop and horizontal flip suit the data (CIFAR yes; digits, clothes
            and 1-D signals no).
    """

    train: ArrayDataset
    test: ArrayDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, ...]
    augment: bool


DATASETS: Registry[Callable[..., SourceSplits]] = Registry("dataset")


def default_data_dir_candidates() -> list[Path]:
    """The folders :func:`default_data_dir` tries, in order."""
    candidates: list[Path] = []
    env = os.environ.get("TAILWISE_DATA_DIR")
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(Path.cwd() / ".." / "shared" / "data")
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "tailwise").is_dir():
            candidates.append(parent.parent / "shared" / "data")
            break
    return candidates


def default_data_dir() -> Path | None:
    """The default data folder (``--data-dir``): the first existing of :func:`default_data_dir_candidates`.

    Returns:
        The resolved folder, or None when none exists.
    """
    for cand in default_data_dir_candidates():
        if cand.is_dir():
            return cand.resolve()
    return None


def load_source(name: str, data_dir: str | Path | None = None, **options: Any) -> SourceSplits:
    """Load the registered source ``name``.

    Args:
        name: a name in :data:`DATASETS` (``DATASETS.names()`` lists them).
        data_dir: folder holding the data files; None uses :func:`default_data_dir`.
        **options: the source's own options (e.g. ``label_set`` for ``cifar10n``).

    Returns:
        The source's :class:`SourceSplits`.

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown option (lists the valid
            ones).
        FileNotFoundError: a data file is missing (the message names the file and the folder).
    """
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    valid = [p for p in params if p != "data_dir" and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in options if k not in valid)
    if unknown and not takes_kwargs:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; valid options: {sorted(valid)}")
    resolved = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return loader(resolved, **options)
