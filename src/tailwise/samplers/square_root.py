r"""Square-root sampler: classes drawn with probability :math:`p_c \propto n_c^{1/2}`.

Mahajan et al., "Exploring the Limits of Weakly Supervised Pretraining", ECCV 2018; Kang et al.,
ICLR 2020 (:math:`q = 1/2` in :math:`p_c \propto n_c^q`). Within a class the sample is uniform, so the
probability of one sample is :math:`n_{y_i}^{q - 1} / \sum_c n_c^q`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tailwise._validation import check_positive
from tailwise.registry import SAMPLERS
from tailwise.samplers.class_probability import ClassProbabilitySampler

__all__ = ["SquareRootSampler"]


@SAMPLERS.register("sqrt", "square_root")
class SquareRootSampler(ClassProbabilitySampler):
    r"""Classes drawn :math:`\propto n_c^{q}` (``power`` :math:`q = 1/2` by default), uniform within a class.

    Args:
        labels: 1-D integer training labels.
        power: exponent :math:`q` (0.5: square root; 0: class-balanced; 1: instance-balanced).
        num_classes, num_replicas, rank, seed, num_samples, drop_last: as in :class:`ClassProbabilitySampler`.
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        power: float = 0.5,
        num_classes: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.power = check_positive("power", power, allow_zero=True)
        super().__init__(labels, None, num_classes, num_replicas, rank, seed, num_samples, drop_last)

    def _default_class_probs(self) -> Tensor:
        return _count_power(self.class_counts.to(torch.float64), self.power)


def _count_power(counts: Tensor, power: float) -> Tensor:
    """:math:`n_c^q` with absent classes (``n_c = 0``) mapped to 0 even for ``q = 0``."""
    return (counts > 0).to(counts.dtype) * counts.clamp(min=1).pow(power)
