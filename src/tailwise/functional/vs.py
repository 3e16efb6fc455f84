r"""Vector-scaling (VS) loss and its special cases LA and CDT (Kini, Paraskevas, Oymak, Thrampoulidis;
NeurIPS 2021, arXiv 2103.01550).

VS applies a per-class multiplicative and additive adjustment to the logits before cross-entropy:

.. math:: \ell(z, y) = -\log \frac{e^{\Delta_y z_y + \iota_y}}{\sum_c e^{\Delta_c z_c + \iota_c}},
   \qquad \Delta_c = (n_c / n_{\max})^{\gamma}, \quad \iota_c = \tau \log \pi_c,

with :math:`\pi_c = n_c / \sum_k n_k` the training prior. The official code (orparask/VS-Loss,
``class_imbalance/losses.py``) divides by :math:`(n_{\max}/n_c)^{\gamma} = 1/\Delta_c`, which is the same.

Special cases:

- :math:`\gamma = 0`: the logit-adjusted (LA) loss of Menon et al. (ICLR 2021) with temperature
  :math:`\tau` (:func:`logit_adjusted_loss`);
- :math:`\tau = 0`: the class-dependent temperature (CDT) loss of Ye et al. (2020) (:func:`cdt_loss`);
- :math:`\gamma = \tau = 0`: cross-entropy.

Class weights follow PyTorch's semantics (``"mean"`` is the weighted mean), as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import (
    _check_class_counts_range,
    check_class_counts,
    check_logits_target,
    check_positive,
    check_real,
    check_reduction,
    check_weight,
)
from tailwise.class_counts import class_priors
from tailwise.functional._fused import AdjustedCrossEntropyFn, adjusted_cross_entropy_fn
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import _compute_logits

__all__ = ["cdt_loss", "logit_adjusted_loss", "vs_adjustments", "vs_loss"]

CountsLike = Sequence[float] | Tensor | np.ndarray

# prepared losses of repeated calls with the same tensor arguments (see tailwise.functional._prepared)
_PREPARED = PreparedLosses()


def vs_adjustments(class_counts: CountsLike, gamma: float = 0.2, tau: float = 1.2) -> tuple[Tensor, Tensor]:
    r"""The VS multiplicative and additive logit adjustments (float64).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        gamma: :math:`\gamma \ge 0` of the multiplicative term.
        tau: :math:`\tau` of the additive term (any finite real).

    Returns:
        ``(delta, iota)``: :math:`\Delta_c = (n_c/n_{\max})^{\gamma} \le 1` and
        :math:`\iota_c = \tau \log(n_c/\sum_k n_k)`. The official ``Delta_list`` is ``1 / delta``.
    """
    counts = check_class_counts(class_counts)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    tau = check_real("tau", tau)
    delta = (counts / counts.max()).pow(gamma)
    iota = tau * torch.log(class_priors(counts))
    return delta, iota


def _log_priors(counts: Tensor) -> Tensor:
    r""":math:`\log(n_c / \sum_k n_k)` of validated positive counts (as ``log(class_priors(counts))``)."""
    return torch.div(counts, counts.sum()).log_()


def _affine_cross_entropy(
    logits: Tensor,
    target: Tensor,
    multiplier: Tensor | None,
    offset: Tensor | None,
    weight: Tensor | Sequence[float] | None,
    reduction: str,
    *,
    checked: bool = False,
) -> Tensor:
    r""":math:`\mathrm{CE}(\Delta \odot z + \iota, y)` after validation; shared by VS, LA, CDT, Bayias.

    ``multiplier`` and ``offset`` are ``(C,)`` vectors (``None`` skips the term); they are cast to the
    compute dtype and device of the logits. ``checked=True``: the caller has already run
    ``check_logits_target(logits, target)``. The loss runs in
    :func:`tailwise.functional._fused.adjusted_cross_entropy_fn`.
    """
    if not checked:
        check_logits_target(logits, target)
    z = _compute_logits(logits)
    return affine_fn(z, multiplier, offset, weight, reduction)(z, target.long())


def affine_fn(
    z: Tensor,
    multiplier: Tensor | None,
    offset: Tensor | None,
    weight: Tensor | Sequence[float] | None,
    reduction: str,
) -> AdjustedCrossEntropyFn:
    """Check ``reduction``, the adjustment vectors and the weights for compute logits ``z``; prepare the loss."""
    check_reduction(reduction)
    num_classes = z.shape[1]
    for vec in (multiplier, offset):
        if vec is not None and vec.numel() != num_classes:
            raise ValueError(
                f"class_counts must have one entry per class ({num_classes} logit columns); got {vec.numel()} entries"
            )
    checked_weight = check_weight(weight, num_classes)
    return adjusted_cross_entropy_fn(
        z,
        multiplier=_cast(multiplier, z),
        offset=_cast(offset, z),
        weight=_cast(checked_weight, z),
        reduction=reduction,
    )


def _cast(vec: Tensor | None, like: Tensor) -> Tensor | None:
    """``vec`` on ``like``'s device and dtype (``None`` stays ``None``)."""
    return None if vec is None else vec.to(device=like.device, dtype=like.dtype)


def vs_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    gamma: float = 0.2,
    tau: float = 1.2,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""VS loss :math:`\mathrm{CE}(\Delta \odot z + \iota, y)` with
    :math:`\Delta_c = (n_c/n_{\max})^{\gamma}`, :math:`\iota_c = \tau\log\pi_c`.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels.
        class_counts: ``(C,)`` training counts.
        gamma: multiplicative exponent (the README example for CIFAR-10-LT uses 0.2; ``train.py``
            defaults to 0.3).
        tau: additive temperature (README example 1.2; ``train.py`` default 1.0).
        weight: optional ``(C,)`` class weights.
        reduction: ``"none" | "mean" | "sum"``.

    Returns:
        The reduced loss (float32 for half/bfloat16 logits).
    """
    key = _PREPARED.key("vs", logits, class_counts, gamma, tau, weight, reduction)
    fn = _PREPARED.get(key)
    if fn is not None:  # the same arguments as an earlier call: only the logits and labels are new
        check_logits_target(logits, target)
        z = _compute_logits(logits)
        return fn(z, target.long())
    num_classes = logits.shape[1] if isinstance(logits, Tensor) and logits.ndim == 2 else None
    counts, _, max_count = _check_class_counts_range(class_counts, num_classes=num_classes)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    tau = check_real("tau", tau)
    # vs_adjustments without repeating the checks; gamma = 0 makes every multiplier exactly 1 and
    # tau = 0 every offset exactly 0, so those terms are skipped.
    delta = None if gamma == 0.0 else torch.div(counts, max_count).pow_(gamma)
    iota = None if tau == 0.0 else _log_priors(counts).mul_(tau)
    check_logits_target(logits, target)
    z = _compute_logits(logits)
    fn = affine_fn(z, delta, iota, weight, reduction)
    _PREPARED.put(key, fn, (class_counts, weight))
    return fn(z, target.long())


def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    tau: float = 1.0,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Logit-adjusted loss (Menon et al., ICLR 2021): :math:`\mathrm{CE}(z + \tau \log \pi, y)`.

    The VS loss with :math:`\gamma = 0` (``--loss_type LA`` of the VS code).
    """
    return vs_loss(logits, target, class_counts, gamma=0.0, tau=tau, weight=weight, reduction=reduction)


def cdt_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    gamma: float = 0.3,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Class-dependent temperature loss (Ye et al., 2020): :math:`\mathrm{CE}((n/n_{\max})^{\gamma} \odot z, y)`.

    The VS loss with :math:`\tau = 0` (``--loss_type CDT`` of the VS code, default :math:`\gamma = 0.3`).
    """
    return vs_loss(logits, target, class_counts, gamma=gamma, tau=0.0, weight=weight, reduction=reduction)
