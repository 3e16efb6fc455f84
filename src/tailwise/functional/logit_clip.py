r"""LogitClip: clamp the p-norm of each logit vector (Wei et al., ICML 2023).

Hongxin Wei, Huiping Zhuang, Renchunzi Xie, Lei Feng, Gang Niu, Bo An, Yixuan Li, "Mitigating
Memorization of Noisy Labels by Clipping the Model Prediction", ICML 2023 (arXiv 2212.04055).

LogitClip bounds the norm of the logit vector before any loss is applied, which bounds the loss
and its gradient on (possibly mislabelled) samples the network is confident about.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tailwise._validation import check_in_choices, check_positive, describe

__all__ = ["LOGIT_CLIP_MODES", "clip_logits"]

LOGIT_CLIP_MODES = ("continuous", "official")

# The official code adds this constant to the norm before comparing and dividing.
_OFFICIAL_EPS = 1e-7


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number >= 1 (or math.inf); got {describe(p)}")
    p = float(p)
    if math.isnan(p) or p < 1:
        raise ValueError(f"p must be >= 1 (a norm order, or math.inf); got {p!r}")
    return p


def clip_logits(logits: Tensor, tau: float, p: float = 2, mode: str = "continuous") -> Tensor:
    r"""Clip the :math:`\ell_p` norm of every row of ``logits``.

    With :math:`\delta = 1/\tau`:

    * ``mode="continuous"`` (default, the paper's clamp):
      :math:`z \mapsto z \cdot \min\bigl(1, \delta / \lVert z\rVert_p\bigr)`, a continuous map that
      leaves rows of norm :math:`\le \delta` unchanged and projects the others onto the sphere of
      radius :math:`\delta`.
    * ``mode="official"`` (the released code, ``algorithms/clip.py``): with
      :math:`n = \lVert z\rVert_p + 10^{-7}`, rows with :math:`n > \tau` become :math:`z\,\delta/n`
      and the others are unchanged. The *threshold* is :math:`\tau` but the *target norm* is
      :math:`1/\tau`; they agree only at :math:`\tau = 1`. For :math:`\tau > 1` the map is
      discontinuous, and for :math:`\tau < 1` rows with norm in :math:`(\tau, 1/\tau)` are scaled
      *up*. Use it to reproduce the paper's numbers.

    Gradients flow through the norm (no stop-gradient), as in the official code.

    Args:
        logits: ``[N, C]`` floating-point logits. Half/bfloat16 inputs are clipped in float32 and
            returned in their own dtype.
        tau: the temperature :math:`\tau > 0`; the bound on the norm is :math:`1/\tau`.
        p: norm order, ``>= 1`` or ``math.inf`` (the official code uses integers, default 2).
        mode: ``"continuous"`` or ``"official"``.

    Returns:
        The clipped logits, same shape and dtype as ``logits``.

    Raises:
        TypeError: ``logits`` is not a floating-point tensor.
        ValueError: bad ``tau``, ``p`` or ``mode``, or logits not of shape ``[N, C]``.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor; got {describe(logits)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C); got shape {tuple(logits.shape)}")
    tau = check_positive("tau", tau)
    p = _check_p(p)
    check_in_choices("mode", mode, LOGIT_CLIP_MODES)

    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    delta = 1.0 / tau
    norms = torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True)
    if mode == "official":
        n = norms + _OFFICIAL_EPS
        clipped = torch.where(n > tau, z / n / tau, z)
    else:
        # min(1, delta / ||z||): rows at or below the bound (including zero rows) keep scale 1.
        scale = (delta / norms.clamp_min(torch.finfo(z.dtype).tiny)).clamp(max=1.0)
        clipped = z * scale
    return clipped.to(logits.dtype)
