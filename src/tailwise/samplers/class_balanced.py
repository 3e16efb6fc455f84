r"""Class-balanced sampler: every class equally likely, then a uniform sample within the class.

:math:`P(c) = 1 / C'` over the :math:`C'` classes present in the training labels (Kang et al.,
"Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, "class-balanced
sampling"; :math:`q = 0` in their :math:`p_c \propto n_c^q` family).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise.registry import SAMPLERS
from tailwise.samplers.class_probability import ClassProbabilitySampler

__all__ = ["ClassBalancedSampler"]


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(ClassProbabilitySampler):
    """Uniform over classes, uniform within a class, i.i.d. with replacement.

    Args:
        labels: 1-D integer training labels.
        num_classes, num_replicas, rank, seed, num_samples, drop_last: as in :class:`ClassProbabilitySampler`
            (absent classes are never drawn).
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        num_classes: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(labels, None, num_classes, num_replicas, rank, seed, num_samples, drop_last)
