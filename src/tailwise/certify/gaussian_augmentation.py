"""Gaussian-noise augmentation, the training baseline of randomized smoothing (Cohen et al., ICML 2019).

The base classifier ``f`` is trained with cross-entropy on noisy copies of each input,

.. math::

    L = \\frac{1}{mB} \\sum_{i=1}^{m} \\sum_{b=1}^{B} \\mathrm{CE}\\big(f(x_b + \\sigma \\varepsilon_{ib}),\\, y_b\\big),
    \\qquad \\varepsilon_{ib} \\sim N(0, I),

so that the smoothed classifier ``g`` built on it (:class:`tailwise.certify.Smooth`) has large
certified radii. Cohen et al. use ``m = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_positive, check_reduction, describe
from tailwise.registry import LOSSES

__all__ = ["GaussianAugmentationLoss", "draw_gaussian_noises"]


def draw_gaussian_noises(
    x: Tensor, num_noises: int, sigma: float, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``num_noises`` noise tensors ``σ·ε``, ``ε ~ N(0, I)``, shaped ``[m, *x.shape]``, on ``x``'s device.

    Args:
        x: the batch the noise will be added to.
        num_noises: number of draws ``m``.
        sigma: standard deviation ``σ``.
        generator: random generator on ``x``'s device (``None``: the global one).
    """
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator must live on the input's device ({x.device}); got a generator on {generator.device}")
    noise = torch.randn((num_noises, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return noise * sigma


def _noises_for(x: Tensor, num_noises: int, sigma: float, generator: torch.Generator | None, noises: Tensor | None) -> Tensor:
    """The given ``noises`` (checked, on ``x``'s device and dtype), or ``num_noises`` fresh draws when ``None``."""
    if noises is None:
        return draw_gaussian_noises(x, num_noises, sigma, generator)
    return _check_noises(noises, x, num_noises)


def _check_noises(noises: Tensor, x: Tensor, num_noises: int) -> Tensor:
    if not isinstance(noises, Tensor):
        raise TypeError(f"noises must be a torch.Tensor of shape (m, *x.shape); got {describe(noises)}")
    if noises.ndim != x.ndim + 1 or noises.shape[1:] != x.shape:
        raise ValueError(f"noises must have shape (m, {', '.join(map(str, x.shape))}); got shape {tuple(noises.shape)}")
    if noises.shape[0] != num_noises:
        raise ValueError(f"noises must hold num_noises={num_noises} draws along dim 0; got {noises.shape[0]}")
    return noises.to(device=x.device, dtype=x.dtype)


@LOSSES.register("gaussian_augmentation")
class GaussianAugmentationLoss(nn.Module):
    """Cross-entropy on Gaussian-noise-augmented copies (the randomized-smoothing training baseline).

    Called as ``loss(model, x, y, generator=None, noises=None)``; the model is applied to the stacked
    ``m·B`` noisy copies ``x + δ_i`` (noise-major order) in its current mode.

    Args:
        sigma: noise standard deviation ``σ > 0``.
        num_noises: number of noise draws ``m`` per input.
        reduction: ``mean`` (over ``m·B``), ``sum`` or ``none`` (the ``m·B`` per-copy losses).
    """

    needs_model = True

    def __init__(self, sigma: float, num_noises: int = 1, reduction: str = "mean") -> None:
        super().__init__()
        self.sigma = check_positive("sigma", sigma)
        if isinstance(num_noises, bool) or not isinstance(num_noises, int) or num_noises < 1:
            raise ValueError(f"num_noises must be an integer >= 1; got {num_noises!r}")
        self.num_noises = num_noises
        self.reduction = check_reduction(reduction)

    def forward(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        noises: Tensor | None = None,
    ) -> Tensor:
        """Loss on ``x + δ_i``, ``i = 1..m``; ``noises`` (``[m, *x.shape]``, already scaled by ``σ``) overrides sampling."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor; got {describe(x)}")
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x.shape[0]},); got {describe(y)}")
        noises = _noises_for(x, self.num_noises, self.sigma, generator, noises)
        m = noises.shape[0]
        inputs = (x.unsqueeze(0) + noises).reshape(m * x.shape[0], *x.shape[1:])
        logits = model(inputs)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return F.cross_entropy(logits, y.repeat(m), reduction=self.reduction)
