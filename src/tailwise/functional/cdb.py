r"""Class-difficulty-balanced (CDB-W) weights and loss.

Sinha, Ohashi and Nakamura, "Class-Wise Difficulty-Balanced Loss for Solving Class-Imbalance",
ACCV 2020 (arXiv 2010.01824), extended as CDB-W in "Class-Difficulty Based Methods for Long-Tailed
Visual Recognition", IJCV 2022 (arXiv 2207.14499).

The difficulty of class :math:`c` is :math:`d_c = 1 - A_c`, with :math:`A_c` its accuracy on a held-out
validation split measured after every epoch. The class weights are

.. math:: w_c = d_c^{\tau}, \qquad w \leftarrow C\, w / \textstyle\sum_k w_k,

and the loss is the class-weighted cross-entropy. The official code ships two *dynamic* :math:`\tau`
rules and two reductions (``hitachi-rd-cv/CDB-loss`` at ``82b0119``):

* ``tau_rule="cifar"`` (``CIFAR-LT/losses/cdb_loss.py``):
  :math:`\tau = \sigma\big(\max_c A_c / (\min_c A_c + 0.01)\big)`, and the training loop takes the
  **plain mean** :math:`\frac1B \sum_i w_{y_i} \mathrm{CE}_i` (``reduction="official_cifar"``);
* ``tau_rule="imagenet"`` (``ImageNet-LT/loss/CDBSoftmaxLoss.py``):
  :math:`\tau = 2\,\sigma\big(\max_c A_c / (\min_c A_c + 0.01) - 1\big)`, with PyTorch's
  **weighted mean** :math:`\sum_i w_{y_i} \mathrm{CE}_i / \sum_i w_{y_i}` (``reduction="mean"``).

A class at 100 % validation accuracy has :math:`d_c = 0` and so weight exactly 0 in the official code
(``zero_weight="official"``); if every class is at 100 % the official normalisation divides by zero.
``zero_weight="epsilon"`` clamps the difficulty at ``epsilon`` first (an opt-in deviation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_finite,
    check_in_choices,
    check_logits_target,
    check_positive,
    check_weight,
    describe,
    to_float64_tensor,
)
from tailwise.class_counts import normalize_to_num_classes
from tailwise.functional._fused import log_softmax_rows
from tailwise.functional._reduce import reduce_loss

__all__ = [
    "CDB_REDUCTIONS",
    "TAU_RULES",
    "ZERO_WEIGHT_MODES",
    "cdb_loss",
    "cdb_tau",
    "cdb_weights",
    "class_accuracy_from_logits",
    "class_difficulty",
]

TAU_RULES = ("cifar", "imagenet")
ZERO_WEIGHT_MODES = ("official", "epsilon")
CDB_REDUCTIONS = ("none", "mean", "sum", "official_cifar", "official_imagenet")

_ACC_OFFSET = 0.01  # the "+ 0.01" of both official dynamic-tau formulas


def _as_vector(name: str, value: Sequence[float] | Tensor | np.ndarray) -> Tensor:
    t = value.detach() if isinstance(value, Tensor) else to_float64_tensor(name, value)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor (one entry per class); got {describe(value)}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    check_finite(name, t)
    return t


def _check_unit_interval(name: str, t: Tensor) -> Tensor:
    if bool(((t < 0) | (t > 1)).any()):
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(f"{name} must lie in [0, 1] for every class; got values in [{lo}, {hi}]")
    return t


def class_accuracy_from_logits(logits: Tensor, target: Tensor, num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    r"""Per-class top-1 accuracy :math:`A_c = \#\{i: y_i = c, \hat y_i = c\} / \#\{i: y_i = c\}`.

    Args:
        logits: validation logits ``(N, C)``.
        target: validation labels ``(N,)``.
        num_classes: number of classes; ``C`` of ``logits`` when omitted.

    Returns:
        ``(accuracy, count)``: float64 accuracy per class (``NaN`` for a class with no validation
        sample, which callers must handle) and the int64 number of validation samples per class.
    """
    check_logits_target(logits, target)
    c = logits.shape[1] if num_classes is None else int(num_classes)
    if c != logits.shape[1]:
        raise ValueError(f"num_classes must equal the number of logit columns {logits.shape[1]}; got {num_classes}")
    target = target.detach().long().cpu()
    correct = (logits.detach().argmax(dim=1).cpu() == target).to(torch.float64)
    count = torch.bincount(target, minlength=c)
    hits = torch.bincount(target, weights=correct, minlength=c)
    acc = hits / count.to(torch.float64)  # NaN where count == 0
    return acc, count


def class_difficulty(class_accuracy: Sequence[float] | Tensor | np.ndarray) -> Tensor:
    r"""Class difficulty :math:`d_c = 1 - A_c` from per-class validation accuracy :math:`A_c \in [0, 1]`."""
    acc = _check_unit_interval("class_accuracy", _as_vector("class_accuracy", class_accuracy))
    return 1.0 - acc


def cdb_tau(class_difficulty: Sequence[float] | Tensor | np.ndarray, tau_rule: str = "cifar") -> Tensor:
    r"""The official dynamic :math:`\tau` from the class difficulties (with :math:`A = 1 - d`).

    * ``"cifar"``: :math:`\tau = \sigma(\max A / (\min A + 0.01))` (CIFAR-LT ``CDB_loss``);
    * ``"imagenet"``: :math:`\tau = 2\sigma(\max A / (\min A + 0.01) - 1)` (ImageNet-LT ``create_loss``).

    Returns a 0-d tensor of the difficulty's dtype.
    """
    check_in_choices("tau_rule", tau_rule, TAU_RULES)
    d = _check_unit_interval("class_difficulty", _as_vector("class_difficulty", class_difficulty))
    ratio = (1.0 - d.min()) / (1.0 - d.max() + _ACC_OFFSET)
    if tau_rule == "cifar":
        return torch.sigmoid(ratio)
    return 2.0 * torch.sigmoid(ratio - 1.0)


def cdb_weights(
    class_difficulty: Sequence[float] | Tensor | np.ndarray,
    tau: str | float = "dynamic",
    tau_rule: str = "cifar",
    zero_weight: str = "official",
    epsilon: float = 0.01,
) -> Tensor:
    r"""CDB-W class weights :math:`w_c = d_c^{\tau}`, rescaled so that :math:`\sum_c w_c = C`.

    Args:
        class_difficulty: per-class difficulty :math:`d_c = 1 - A_c \in [0, 1]`.
        tau: ``"dynamic"`` (the official default; computed by :func:`cdb_tau`) or a fixed
            :math:`\tau \ge 0` (the CIFAR README uses 1.5, the ImageNet-LT yaml 1).
        tau_rule: which official dynamic formula, ``"cifar"`` or ``"imagenet"`` (ignored for a fixed tau).
        zero_weight: ``"official"`` keeps :math:`d_c^\tau`, so a class at 100 % validation accuracy gets
            weight exactly 0 (and all-perfect accuracy is an error, where the official code returns NaN);
            ``"epsilon"`` first clamps :math:`d_c \ge` ``epsilon``, so every class keeps a positive weight.
            The dynamic :math:`\tau` is always computed from the unclamped difficulty.
        epsilon: the clamp for ``zero_weight="epsilon"`` (default 0.01, below one error in 100
            validation images).

    Returns:
        Weights of shape ``(C,)`` in the difficulty's floating dtype.

    Raises:
        ValueError: difficulties outside [0, 1], an unknown option, or (official mode) every
            difficulty zero.
    """
    d = _check_unit_interval("class_difficulty", _as_vector("class_difficulty", class_difficulty))
    check_in_choices("zero_weight", zero_weight, ZERO_WEIGHT_MODES)
    if isinstance(tau, str):
        check_in_choices("tau", tau, ("dynamic",))
        tau_v: Tensor | float = cdb_tau(d, tau_rule)
    else:
        check_in_choices("tau_rule", tau_rule, TAU_RULES)
        tau_v = check_positive("tau", tau, allow_zero=True)
    if zero_weight == "epsilon":
        eps = check_positive("epsilon", epsilon)
        if eps > 1:
            raise ValueError(f"epsilon must lie in (0, 1]; got {epsilon!r}")
        d = d.clamp(min=eps)
    elif not bool((d > 0).any()):
        raise ValueError(
            "class_difficulty is 0 for every class (100% validation accuracy everywhere), so the official "
            "CDB weights 0/0 are undefined; use zero_weight='epsilon'"
        )
    w = torch.pow(d, tau_v)
    return normalize_to_num_classes(w)


def cdb_loss(
    logits: Tensor,
    target: Tensor,
    weights: Tensor | Sequence[float],
    reduction: str = "mean",
) -> Tensor:
    r"""Class-difficulty-balanced cross-entropy :math:`\ell_i = w_{y_i}\,\mathrm{CE}(z_i, y_i)`.

    Args:
        logits: ``(N, C)`` logits.
        target: ``(N,)`` int64 labels.
        weights: per-class CDB weights ``(C,)`` (from :func:`cdb_weights`).
        reduction: ``"none"`` (the per-sample :math:`w_{y_i}\mathrm{CE}_i`), ``"sum"``, ``"mean"`` (PyTorch's
            weighted mean :math:`\sum_i w_{y_i}\mathrm{CE}_i / \sum_i w_{y_i}`, the official ImageNet-LT
            reduction, alias ``"official_imagenet"``) or ``"official_cifar"`` (the plain mean
            :math:`\frac1N \sum_i w_{y_i}\mathrm{CE}_i` the official CIFAR loop back-propagates).

    Returns:
        The reduced loss (a scalar, or ``(N,)`` for ``"none"``).
    """
    check_in_choices("reduction", reduction, CDB_REDUCTIONS)
    check_logits_target(logits, target)
    w = check_weight(weights, logits.shape[1], name="weights")
    assert w is not None
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    w = w.to(device=x.device, dtype=x.dtype)
    ce = F.nll_loss(log_softmax_rows(x), target, reduction="none")
    sample_w = w[target]
    if reduction == "official_cifar":
        return (sample_w * ce).mean()
    if reduction == "official_imagenet":
        reduction = "mean"
    return reduce_loss(ce, reduction, sample_w)
