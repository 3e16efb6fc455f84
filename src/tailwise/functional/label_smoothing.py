r"""Label-smoothing cross-entropy (Szegedy, Vanhoucke, Ioffe, Shlens, Wojna; CVPR 2016).

The target distribution mixes the one-hot label with the uniform distribution:

.. math:: q_c = (1 - \epsilon)\,[c = y] + \epsilon / C, \qquad
   \ell = -\sum_c q_c \log \operatorname{softmax}(z)_c

This is :func:`tailwise.functional.cross_entropy` with ``label_smoothing=smoothing`` (PyTorch's
semantics, including its handling of ``weight``), under its own name for the registry and recipes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise._validation import check_probability
from tailwise.functional.ce import cross_entropy

__all__ = ["label_smoothing_loss"]


def label_smoothing_loss(
    logits: Tensor,
    target: Tensor,
    smoothing: float = 0.1,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy against the smoothed target :math:`(1-\epsilon)\,\mathrm{onehot}(y) + \epsilon/C`.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels (or ``(N, C)`` soft targets, smoothed the same way).
        smoothing: :math:`\epsilon \in [0, 1]`; ``0`` gives cross-entropy.
        weight: optional ``(C,)`` class weights (PyTorch semantics).
        reduction: ``"none" | "mean" | "sum"``.

    Returns:
        The reduced loss.
    """
    smoothing = check_probability("smoothing", smoothing)
    return cross_entropy(logits, target, weight=weight, reduction=reduction, label_smoothing=smoothing)
