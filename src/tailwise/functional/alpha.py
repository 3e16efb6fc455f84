r"""alpha-loss: a tunable loss between log-loss, exponential loss and the soft 0-1 loss.

Tyler Sypherd, Mario Diaz, John Kevin Cava, Gautam Dasarathy, Peter Kairouz, Lalitha Sankar,
"A Tunable Loss Function for Robust Classification: Calibration, Landscape, and Generalization",
IEEE Transactions on Information Theory 68(9), 2022 (arXiv 1906.02314).

For a predicted distribution :math:`\hat p = \mathrm{softmax}(z)` and label :math:`y`,

.. math::

    \ell^\alpha(y, \hat p) = \frac{\alpha}{\alpha - 1}\bigl(1 - \hat p_y^{\,1 - 1/\alpha}\bigr),
    \qquad \alpha \in (0, 1) \cup (1, \infty),

with the limits :math:`-\log \hat p_y` (log-loss) at :math:`\alpha = 1` and :math:`1 - \hat p_y` at
:math:`\alpha = \infty`; :math:`\alpha = 1/2` gives :math:`\hat p_y^{-1} - 1` (the exponential loss in
the binary margin form). :math:`\alpha > 1` is robust to label noise, :math:`\alpha < 1` emphasises
hard (e.g. minority-class) samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import check_logits_target, check_positive, check_reduction, check_weight, describe
from tailwise.functional._reduce import reduce_loss

__all__ = ["alpha_loss", "check_alpha"]

# The official code adds this constant to the softmax inside the log at alpha == 1.
_OFFICIAL_LOG_EPS = 1e-8


def check_alpha(alpha: float) -> float:
    """Validate :math:`\\alpha \\in (0, \\infty]` and return it as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha must be a number in (0, inf]; got {describe(alpha)}")
    if float(alpha) == math.inf:
        return math.inf
    return check_positive("alpha", alpha)


def _alpha_terms(log_p: Tensor, alpha: float, official_numerics: bool) -> Tensor:
    r"""Element-wise :math:`\ell^\alpha` as a function of :math:`\log \hat p`.

    With :math:`\varepsilon = 1 - 1/\alpha = (\alpha - 1)/\alpha`,
    :math:`\ell = \frac{1}{\varepsilon}\bigl(1 - e^{\varepsilon \log \hat p}\bigr)
    = -\operatorname{expm1}(\varepsilon \log \hat p)/\varepsilon`, which stays accurate as
    :math:`\varepsilon \to 0` (:math:`\alpha \to 1`) and is bounded by :math:`1/\varepsilon` for
    :math:`\alpha > 1` however extreme the logits.
    """
    if alpha == 1.0:
        if official_numerics:
            return -torch.log(log_p.exp() + _OFFICIAL_LOG_EPS)
        return -log_p
    if alpha == math.inf:
        return -torch.expm1(log_p)
    if official_numerics:
        # The official script builds alpha and 1 as float32 tensors: alpha is rounded to float32, and the
        # exponent 1 - 1/alpha and the factor alpha/(alpha - 1) are computed in float32.
        a = np.float32(alpha)
        one = np.float32(1.0)
        exponent = float(one - one / a)
        factor = float(a / (a - one))
        return -torch.expm1(exponent * log_p) * factor
    eps = (alpha - 1.0) / alpha  # alpha - 1 is exact near 1, so eps keeps full relative precision
    return -torch.expm1(eps * log_p) / eps


def alpha_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float,
    reduction: str = "mean",
    weight: Tensor | None = None,
    official_sigmoid: bool = False,
    official_numerics: bool = False,
) -> Tensor:
    r"""alpha-loss of Sypherd et al. (IEEE TIT 2022) on logits.

    Per sample, with :math:`\log\hat p = \mathrm{log\_softmax}(z)` and
    :math:`\varepsilon = 1 - 1/\alpha`:

    .. math::

        \ell_i = \sum_k t_{ik}\,\frac{1 - \exp(\varepsilon \log \hat p_{ik})}{\varepsilon}
               = -\sum_k t_{ik}\,\frac{\operatorname{expm1}(\varepsilon \log \hat p_{ik})}{\varepsilon},

    for hard labels :math:`t_{ik} = [k = y_i]`. :math:`\alpha = 1` is exactly cross-entropy,
    :math:`\alpha = \infty` is :math:`1 - \hat p_y`. Computed from ``log_softmax``, so for
    :math:`\alpha \ge 1` the loss and its gradient stay finite for arbitrarily large logits. For
    :math:`\alpha < 1` the loss is unbounded (:math:`\alpha = 1/2` is :math:`1/\hat p_y - 1`) and
    overflows to ``inf`` once :math:`-\log\hat p_y \gtrsim 88\,|\varepsilon|^{-1}` in float32.

    Args:
        logits: ``[N, C]`` logits (half/bfloat16 are computed in float32).
        target: ``[N]`` int64 labels, or soft ``[N, C]`` probability targets.
        alpha: :math:`\alpha \in (0, \infty]` (``math.inf`` allowed).
        reduction: ``'none' | 'mean' | 'sum'``. The official code uses the batch mean.
        weight: optional per-class weights with PyTorch's semantics: hard labels use the weighted
            mean :math:`\sum_i w_{y_i}\ell_i / \sum_i w_{y_i}`; soft targets weight each class term,
            :math:`\sum_k w_k t_{ik}\ell_{ik}`, and ``'mean'`` divides by :math:`N`.
        official_sigmoid: apply ``torch.sigmoid`` to ``logits`` before the softmax, as the official
            CIFAR-10 models do (their last layer is a sigmoid, which caps :math:`\hat p_y` at
            :math:`e/(e + C - 1)`). Only for reproducing those experiments.
        official_numerics: reproduce the official script's arithmetic: :math:`\alpha` rounded to
            float32, the exponent and the factor :math:`\alpha/(\alpha-1)` computed in float32, and
            :math:`-\log(\hat p_y + 10^{-8})` at :math:`\alpha = 1`. Used by the golden tests.

    Returns:
        The reduced loss (a scalar), or the per-sample losses ``[N]`` for ``reduction='none'``.
    """
    soft = check_logits_target(logits, target, allow_soft=True)
    check_reduction(reduction)
    alpha = check_alpha(alpha)
    weight = check_weight(weight, logits.shape[1])

    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if official_sigmoid:
        z = torch.sigmoid(z)
    log_p = F.log_softmax(z, dim=1)
    if soft:
        t = target.to(log_p.dtype)
        if weight is not None:
            t = t * weight.to(device=log_p.device, dtype=log_p.dtype)
        per_sample = (t * _alpha_terms(log_p, alpha, official_numerics)).sum(dim=1)
        return reduce_loss(per_sample, reduction)
    target = target.long()
    log_p_y = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    per_sample = _alpha_terms(log_p_y, alpha, official_numerics)
    sample_weight = None if weight is None else weight.to(device=log_p.device, dtype=log_p.dtype)[target]
    return reduce_loss(per_sample, reduction, sample_weight)
