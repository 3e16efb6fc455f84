"""In-memory labelled arrays: the one dataset type every source returns and the trainer consumes.

Images are stored as ``uint8`` tensors laid out channels-first ``(N, C, H, W)`` (conversion to float,
cropping, flipping and normalisation happen batched on the device, see
:class:`tailwise.transforms.augment.BatchAugment`); 1-D signals such as MNIST-1D are ``float32``
``(N, 1, L)``. Labels are ``int64``. ``index`` keeps each sample's position in the source's original
order, so subsets (long-tail subsampling, validation splits) stay traceable to the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import describe

__all__ = ["ArrayDataset"]


def _as_index_tensor(indices: Sequence[int] | Tensor | np.ndarray, name: str = "indices") -> Tensor:
    """Convert an index sequence / array / tensor (or a boolean mask) to a 1-D int64 tensor."""
    if isinstance(indices, Tensor):
        idx = indices.detach().cpu()
    else:
        arr = np.asarray(indices)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        idx = torch.as_tensor(arr)
    if idx.dtype == torch.bool:
        idx = torch.nonzero(idx).flatten()
    if idx.ndim != 1 or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"{name} must be a 1-D sequence of integer positions or a boolean mask; got {describe(indices)}")
    return idx.to(torch.int64)


@dataclass
class ArrayDataset:
    """A labelled dataset held as tensors.

    Attributes:
        x: inputs; images as ``uint8`` ``(N, C, H, W)``, 1-D signals as ``float32`` ``(N, 1, L)``.
        y: ``int64`` labels ``(N,)`` (the possibly noisy training labels).
        num_classes: number of classes ``C`` (labels lie in ``[0, C)``).
        class_names: optional list of ``C`` class names.
        clean_y: true labels ``(N,)`` when label noise was injected (or comes with the source), else None.
        index: ``int64`` ``(N,)`` positions of the samples in the source's original order
            (defaults to ``0..N-1``).
    """

    x: Tensor
    y: Tensor
    num_classes: int
    class_names: list[str] | None = None
    clean_y: Tensor | None = None
    index: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor):
            raise TypeError(f"x must be a torch.Tensor; got {describe(self.x)}")
        if not isinstance(self.y, Tensor):
            raise TypeError(f"y must be a torch.Tensor; got {describe(self.y)}")
        if self.x.ndim < 2:
            raise ValueError(f"x must have shape (N, C, ...) with at least 2 dimensions; got shape {tuple(self.x.shape)}")
        n = self.x.shape[0]
        if self.y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match x {tuple(self.x.shape)}; got shape {tuple(self.y.shape)}")
        if self.y.dtype != torch.int64:
            if self.y.is_floating_point():
                raise TypeError(f"y must hold integer class labels; got dtype {self.y.dtype}")
            self.y = self.y.to(torch.int64)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {self.num_classes!r}")
        self.num_classes = int(self.num_classes)
        if n > 0:
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"y labels must lie in [0, {self.num_classes - 1}] for {self.num_classes} classes; got values in [{lo}, {hi}]"
                )
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names must have one entry per class ({self.num_classes}); got {len(self.class_names)} names"
                )
        if self.clean_y is not None:
            if not isinstance(self.clean_y, Tensor) or self.clean_y.shape != (n,):
                raise ValueError(f"clean_y must be a tensor of shape ({n},); got {describe(self.clean_y)}")
            self.clean_y = self.clean_y.to(torch.int64)
        if self.index is None:
            self.index = torch.arange(n, dtype=torch.int64)
        else:
            self.index = _as_index_tensor(self.index, "index")
            if self.index.shape != (n,):
                raise ValueError(f"index must have shape ({n},); got shape {tuple(self.index.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """The ``(x[i], y[i])`` pair (so the dataset also works with a ``torch.utils.data.DataLoader``)."""
        return self.x[i], self.y[i]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(3, 32, 32)`` or ``(1, 40)``."""
        return tuple(int(s) for s in self.x.shape[1:])

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> ArrayDataset:
        """A new dataset holding the samples at ``indices`` (positions in this dataset), in that order.

        Args:
            indices: 1-D integer positions (or a boolean mask of length ``len(self)``).

        Raises:
            TypeError: ``indices`` is not 1-D integer / boolean.
            IndexError: a position is out of range.
        """
        idx = _as_index_tensor(indices)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"indices must lie in [0, {n - 1}] for a dataset of {n} samples; got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        dev = self.x.device
        return ArrayDataset(
            x=self.x[idx.to(dev)],
            y=self.y[idx.to(self.y.device)],
            num_classes=self.num_classes,
            class_names=None if self.class_names is None else list(self.class_names),
            clean_y=None if self.clean_y is None else self.clean_y[idx.to(self.clean_y.device)],
            index=self.index[idx],
        )

    def class_counts(self) -> Tensor:
        """Per-class sample counts as an ``int64`` tensor of length ``num_classes`` (uses ``y``)."""
        return torch.bincount(self.y.cpu(), minlength=self.num_classes)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """A copy with ``x``, ``y`` and ``clean_y`` moved to ``device`` (``index`` stays on the CPU)."""
        return ArrayDataset(
            x=self.x.to(device),
            y=self.y.to(device),
            num_classes=self.num_classes,
            class_names=None if self.class_names is None else list(self.class_names),
            clean_y=None if self.clean_y is None else self.clean_y.to(device),
            index=self.index,
        )
