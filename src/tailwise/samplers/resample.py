r"""LDAM-DRW's "Resample" rule (class-balanced resampling with effective-number weights).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019
(the "CB RS" baseline, ``--train_rule Resample`` in ``kaidic/LDAM-DRW``); weights from Cui et al.,
"Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.

The official code draws ``torch.multinomial(w, N, replacement=True)`` with per-sample weights
:math:`w_i = \frac{1-\beta}{1-\beta^{n_{y_i}}}` (:math:`\beta = 0.9999`), so class :math:`c` is drawn with
probability :math:`p_c \propto n_c\,\frac{1-\beta}{1-\beta^{n_c}}` and the sample is uniform within it.
This sampler draws from exactly that distribution (through :class:`ClassProbabilitySampler`); the
random stream differs from the official global-RNG call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tailwise.class_counts import effective_number_weights
from tailwise.registry import SAMPLERS
from tailwise.samplers.class_probability import ClassProbabilitySampler

__all__ = ["EffectiveNumberResampler"]


@SAMPLERS.register("resample")
class EffectiveNumberResampler(ClassProbabilitySampler):
    r"""Samples drawn :math:`\propto` the effective-number weight of their class, with replacement.

    Args:
        labels: 1-D integer training labels.
        beta: effective-number hyper-parameter (official 0.9999).
        num_classes, num_replicas, rank, seed, num_samples, drop_last: as in :class:`ClassProbabilitySampler`
            (``num_samples`` defaults to ``len(labels)``, as in the official code).
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        beta: float = 0.9999,
        num_classes: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.beta = float(beta)
        super().__init__(labels, None, num_classes, num_replicas, rank, seed, num_samples, drop_last)

    def _default_class_probs(self) -> Tensor:
        counts = self.class_counts.to(torch.float64)
        present = counts > 0
        probs = counts.new_zeros(counts.shape)
        probs[present] = counts[present] * effective_number_weights(counts[present], self.beta, normalize=False)
        return probs
