r"""Two-level random sampler: draw a class from given probabilities, then a sample uniformly within it.

This is the engine of every class-aware sampler in tailwise (class-balanced, square-root, the
LDAM-DRW "Resample" rule, CDB-S). Drawing :math:`K` indices i.i.d. with replacement from

.. math:: P(i) = p_{y_i} / n_{y_i}

is the same distribution as ``torch.multinomial`` over per-sample weights :math:`w_i \propto p_{y_i} / n_{y_i}`,
but it costs :math:`O(K)` instead of :math:`O(N)` per draw and has no limit on the dataset size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import describe, to_float64_tensor
from tailwise.class_counts import class_counts_from_labels
from tailwise.registry import SAMPLERS
from tailwise.samplers.shuffle import _EpochShardedSampler, epoch_generator

__all__ = ["ClassProbabilitySampler"]


def _labels_tensor(labels: Any) -> Tensor:
    t = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
    if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool or t.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor of integer class indices; got {describe(labels)}")
    return t.detach().to(device="cpu", dtype=torch.int64)


@SAMPLERS.register("class_probability")
class ClassProbabilitySampler(_EpochShardedSampler):
    r"""Draw ``num_samples`` dataset indices per epoch: class :math:`c \sim p`, then uniform within :math:`c`.

    Draws are i.i.d. with replacement. The draw of an epoch is a pure function of ``(seed, epoch)`` and
    the class probabilities (see :func:`~tailwise.samplers.epoch_generator`), so a run resumed at an
    epoch boundary replays exactly. With ``num_replicas > 1`` every rank draws the same global sequence
    and keeps its strided shard ``indices[rank::num_replicas]`` after padding to a multiple (see
    :func:`~tailwise.samplers.shard_indices`), like ``DistributedSampler``.

    Args:
        labels: 1-D integer training labels (dataset index ``i`` has label ``labels[i]``).
        class_probs: per-class sampling probabilities (any non-negative scale; normalised here).
            A class with no training sample must get probability 0.
        num_classes: number of classes; ``len(class_probs)`` (or ``max(labels) + 1``) when omitted.
        num_replicas: number of processes.
        rank: this process's rank.
        seed: base seed.
        num_samples: global number of draws per epoch (default ``len(labels)``).
        drop_last: trim instead of pad when ``num_samples`` is not a multiple of ``num_replicas``.

    A subclass says how its class probabilities are computed by overriding
    :meth:`_default_class_probs` (used when ``class_probs`` is ``None``) and passes the shared
    arguments on to this constructor.
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        class_probs: Tensor | Sequence[float] | None = None,
        num_classes: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.labels = _labels_tensor(labels)
        if num_classes is None and class_probs is not None:
            num_classes = len(class_probs)
        self.class_counts = class_counts_from_labels(self.labels, num_classes)
        self.num_classes = int(self.class_counts.numel())
        # dataset indices grouped by class: class c occupies order[starts[c] : starts[c] + counts[c]]
        self._order = torch.argsort(self.labels, stable=True)
        self._starts = torch.cumsum(self.class_counts, 0) - self.class_counts
        n = self.labels.numel() if num_samples is None else num_samples
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"num_samples must be a positive int; got {describe(num_samples)}")
        self.num_samples = int(n)
        self._init_sharding(num_replicas, rank, seed, drop_last)
        if self.drop_last and self.num_samples < self.num_replicas:
            raise ValueError(f"num_samples must be >= num_replicas with drop_last; got {self.num_samples} < {self.num_replicas}")
        self.set_class_probs(class_probs if class_probs is not None else self._default_class_probs())

    def _default_class_probs(self) -> Tensor:
        """The class probabilities when none are given (any non-negative scale): uniform over present classes."""
        return (self.class_counts > 0).to(torch.float64)

    def set_class_probs(self, class_probs: Tensor | Sequence[float]) -> None:
        """Replace the class probabilities (normalised to sum 1); used from the next draw on."""
        p = to_float64_tensor("class_probs", class_probs.detach().cpu() if isinstance(class_probs, Tensor) else class_probs)
        if p.shape != (self.num_classes,):
            raise ValueError(f"class_probs must have one entry per class ({self.num_classes}); got {describe(class_probs)}")
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError(f"class_probs must be finite and non-negative; got {p.tolist()}")
        if float(p.sum()) <= 0:
            raise ValueError(f"class_probs must have a positive sum; got {p.tolist()}")
        empty = (p > 0) & (self.class_counts == 0)
        if bool(empty.any()):
            bad = [int(i) for i in torch.nonzero(empty).flatten()]
            raise ValueError(f"class_probs must be 0 for classes with no training sample; got positive probability for classes {bad}")
        self.class_probs = p / p.sum()

    def global_indices(self) -> Tensor:
        """The ``num_samples`` draws of this epoch, before sharding (int64)."""
        g = epoch_generator(self.seed, self.epoch)
        cls = torch.multinomial(self.class_probs, self.num_samples, replacement=True, generator=g)
        u = torch.rand(self.num_samples, generator=g, dtype=torch.float64)
        counts = self.class_counts[cls]
        within = torch.minimum((u * counts).long(), counts - 1)
        return self._order[self._starts[cls] + within]

    def _global_size(self) -> int:
        return self.num_samples
