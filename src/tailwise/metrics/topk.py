"""Top-k accuracy: the fraction of samples whose label is among the ``k`` highest scores.

.. math:: \\mathrm{acc}_k = \\frac{1}{N} \\sum_n [y_n \\in \\mathrm{top}_k(s_n)]

``top_k`` is ``torch.topk``: among tied scores at the k-th place the set is chosen by ``torch.topk``
(implementation-defined), as in the LDAM-DRW ``accuracy(output, target, topk=(1, 5))`` helper. Top-5 is
the second number of ImageNet-LT / iNaturalist tables (e.g. Cao et al., NeurIPS 2019, §4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tailwise._validation import check_int, check_logits_target
from tailwise.metrics._base import Metric

__all__ = ["TopKAccuracy", "top_k_accuracy"]


def top_k_correct(preds: Tensor, target: Tensor, k: int) -> Tensor:
    """Number of samples (int64 scalar) whose label is among the ``k`` best scores of ``preds (N, C)``."""
    k = check_int("k", k)
    if not isinstance(preds, Tensor) or preds.ndim != 2:
        shape = tuple(preds.shape) if isinstance(preds, Tensor) else type(preds).__name__
        raise ValueError(f"preds must be scores of shape (N, C) for top-k accuracy; got {shape}")
    if k > preds.shape[1]:
        raise ValueError(f"k must be at most the number of classes C = {preds.shape[1]}; got k={k}")
    check_logits_target(preds, target, logits_name="preds", target_name="target")
    top = preds.topk(k, dim=1).indices
    return (top == target.long().unsqueeze(1)).any(dim=1).sum()


def top_k_accuracy(preds: Tensor, target: Tensor, k: int = 5) -> Tensor:
    """Top-k accuracy of a batch.

    Args:
        preds: scores ``(N, C)`` (logits or probabilities), ``C >= k``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        k: size of the predicted set.

    Returns:
        A float32 scalar tensor in ``[0, 1]``; NaN when ``N = 0``.

    Raises:
        TypeError: non-tensor or wrongly typed inputs.
        ValueError: ``k`` not in ``[1, C]``, shape mismatch, labels out of range.
    """
    correct = top_k_correct(preds, target, k)
    n = target.numel()
    return correct.float() / n if n else torch.tensor(float("nan"), device=preds.device)


class TopKAccuracy(Metric):
    """Streaming top-k accuracy (the stateful twin of :func:`top_k_accuracy`).

    Args:
        k: size of the predicted set (5 by default).
    """

    correct: Tensor
    total: Tensor

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = check_int("k", k)
        self.add_state("correct", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), "sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of scores ``(N, C)`` with labels ``(N,)``."""
        correct = top_k_correct(preds, target, self.k)
        self.correct += correct.to(self.correct.device)
        self.total += target.numel()

    def compute(self) -> Tensor:
        """Top-k accuracy over everything seen since the last :meth:`reset` (NaN when nothing was seen)."""
        self.sync()
        value = self.correct.float() / self.total.clamp_min(1).float()
        return torch.where(self.total > 0, value, torch.full_like(value, float("nan")))
