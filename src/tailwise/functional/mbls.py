r"""MbLS: margin-based label smoothing (Liu et al., CVPR 2022).

Bingyuan Liu, Ismail Ben Ayed, Adrian Galdran, Jose Dolz, "The Devil is in the Margin: Margin-based
Label Smoothing for Network Calibration", CVPR 2022 (arXiv 2111.15430). Official code
``by-liu/MbLS`` (``LogitMarginL1``), also shipped as the ``logit_margin`` baseline of CALS.

.. math::

    L = \mathrm{CE}(z, y) + \alpha\,\frac{1}{NC}\sum_{i,j}\bigl[\max_k z_{ik} - z_{ij} - m\bigr]_+ .

The penalty leaves logit distances below the margin :math:`m` free and pulls larger ones back: a
label-smoothing-like regulariser whose strength does not push all logits to be equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import check_logits_target, check_positive, check_reduction, check_weight
from tailwise.functional._reduce import reduce_loss

__all__ = ["mbls_loss", "mbls_margin_penalty"]


def mbls_margin_penalty(logits: Tensor, margin: float = 10.0) -> Tensor:
    r"""Per-sample margin penalty :math:`\frac1C\sum_j [\max_k z_{ik} - z_{ij} - m]_+`, shape ``[N]``.

    The maximum is ``Tensor.max`` (its gradient goes to one arg-max under ties), as in the official code.
    """
    margin = check_positive("margin", margin, allow_zero=True)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    diff = z.max(dim=1, keepdim=True).values - z
    return F.relu(diff - margin).mean(dim=1)


def mbls_loss(
    logits: Tensor,
    target: Tensor,
    margin: float = 10.0,
    alpha: float = 0.1,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Margin-based label smoothing loss :math:`\mathrm{CE} + \alpha\cdot\mathrm{mean}_{ij}[d_{ij} - m]_+`.

    Per sample: :math:`\mathrm{CE}_i + \frac{\alpha}{C}\sum_j [d_{ij} - m]_+` with
    :math:`d_{ij} = \max_k z_{ik} - z_{ij}`, so ``'mean'`` gives the official
    ``CE_mean + alpha * relu(d - m).mean()``. A per-class ``weight`` weights the cross-entropy term
    (PyTorch's weighted mean); the margin term is always the plain mean.

    Args:
        logits: ``[N, C]`` logits.
        target: ``[N]`` int64 labels.
        margin: margin :math:`m \ge 0` (official default 10).
        alpha: weight :math:`\alpha \ge 0` of the margin term (official default 0.1); 0 gives CE.
        reduction: ``'none' | 'mean' | 'sum'``.
        weight: optional per-class weights of the cross-entropy term.
    """
    check_logits_target(logits, target)
    check_reduction(reduction)
    alpha = check_positive("alpha", alpha, allow_zero=True)
    weight = check_weight(weight, logits.shape[1])
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    target = target.long()
    ce = F.cross_entropy(z, target, reduction="none")
    sample_weight = None if weight is None else weight.to(device=z.device, dtype=z.dtype)[target]
    pen = mbls_margin_penalty(z, margin)
    return reduce_loss(ce, reduction, sample_weight) + alpha * reduce_loss(pen, reduction)
