r"""UniMix: tail-favouring mixup (Xu, Chai, Yuan; NeurIPS 2021, arXiv 2111.03874, "Towards Calibrated
Model for Long-Tailed Visual Recognition from Prior Perspective").

For a batch :math:`(x_i, y_i)_{i<B}` with training counts :math:`n_c`:

1. **Partner sampling.** Each sample :math:`i` draws a partner :math:`j(i)` from the batch positions,
   with replacement, with probability :math:`p_j \propto n_{y_j}^{\tau}` (normalised over the ``B``
   positions). :math:`\tau < 0` favours tail-class partners.
2. **Mixing factor.** :math:`\xi^*_i = n_{y_{j(i)}} / (n_{y_i} + n_{y_{j(i)}})` and, with
   :math:`b_i \sim \mathrm{Beta}(\alpha, \alpha)`,

   .. math:: \lambda_i = \xi^*_i + b_i - [\xi^*_i + b_i > 1] = (\xi^*_i + b_i) \bmod 1,

   so with :math:`\alpha < 1` (U-shaped Beta) :math:`\lambda_i` concentrates near :math:`\xi^*_i`: the
   rarer member of the pair gets the larger share of the image.
3. **Mix.** :math:`\tilde{x}_i = \lambda_i x_i + (1-\lambda_i)\, x_{j(i)}`; the labels stay
   :math:`(y_i, y_{j(i)})` and the loss is
   :math:`\frac1B\sum_i \lambda_i \ell(z_i, y_i) + (1-\lambda_i)\,\ell(z_i, y_{j(i)})` (:func:`mixed_loss`),
   with the Bayias-compensated loss (:class:`tailwise.losses.BayiasLoss`) in the official recipe.

The official code (XuZhengzhuo/Prior-LT, ``core.py``) draws from numpy's global RNG; here every draw
comes from an explicit ``torch.Generator`` (``torch.multinomial`` for the partners, two Gamma draws for
each Beta variate), and :func:`unimix_from_draws` gives the deterministic part for given draws. Official
hyper-parameters: :math:`\alpha = 0.8`; :math:`\tau = -0.5` (CIFAR-10-LT) or :math:`-0.1` (CIFAR-100-LT);
mixing in every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tailwise._validation import (
    check_class_counts,
    check_positive,
    check_real,
    describe,
    validation_disabled,
    validation_enabled,
)
from tailwise.registry import BATCH_TRANSFORMS

__all__ = [
    "UniMix",
    "mixed_loss",
    "unimix",
    "unimix_from_draws",
    "unimix_probabilities",
    "unimix_xi_star",
]

CountsLike = Sequence[float] | Tensor | np.ndarray


def _check_labels(name: str, labels: Tensor, size: int | None, upper: int, what: str) -> Tensor:
    """A 1-D integer tensor (of length ``size`` when given) with values in ``[0, upper)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer indices; got {describe(labels)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices; got dtype {labels.dtype}")
    if labels.ndim != 1 or (size is not None and labels.numel() != size):
        expected = f"({size},)" if size is not None else "(B,)"
        raise ValueError(f"{name} must have shape {expected}; got shape {tuple(labels.shape)}")
    if validation_enabled() and labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} must lie in [0, {upper - 1}] ({what}); got values in [{lo}, {hi}]")
    return labels.long()




def unimix_probabilities(labels: Tensor, class_counts: CountsLike, tau: float = -0.5) -> Tensor:
    r"""Partner-sampling probabilities over the batch positions, :math:`p_i \propto n_{y_i}^{\tau}`.

    Args:
        labels: ``(B,)`` integer labels of the batch.
        class_counts: ``(C,)`` training counts (all positive).
        tau: exponent :math:`\tau` (negative favours the tail).

    Returns:
        float64 ``(B,)`` probabilities summing to 1, on ``labels``' device.
    """
    counts = check_class_counts(class_counts)
    c = counts.numel()
    labels = _check_labels("labels", labels, None, c, f"{c} classes in class_counts")
    return _probabilities(labels, counts.to(labels.device), check_real("tau", tau))


def _probabilities(labels: Tensor, counts: Tensor, tau: float) -> Tensor:
    w = counts[labels].pow(tau)
    return w / w.sum()


def unimix_xi_star(y_a: Tensor, y_b: Tensor, class_counts: CountsLike) -> Tensor:
    r"""The tail-favouring base factor :math:`\xi^* = n_{y_b} / (n_{y_a} + n_{y_b})` (float64, ``y_a``'s device)."""
    counts = check_class_counts(class_counts)
    c = counts.numel()
    y_a = _check_labels("y_a", y_a, None, c, f"{c} classes in class_counts")
    y_b = _check_labels("y_b", y_b, y_a.numel(), c, f"{c} classes in class_counts")
    return _xi_star(y_a, y_b.to(y_a.device), counts.to(y_a.device))


def _xi_star(y_a: Tensor, y_b: Tensor, counts: Tensor) -> Tensor:
    n_a, n_b = counts[y_a], counts[y_b]
    return n_b / (n_a + n_b)


def unimix_from_draws(
    x: Tensor,
    y: Tensor,
    class_counts: CountsLike,
    partner_index: Tensor,
    beta_draws: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""UniMix for given random draws (deterministic).

    Args:
        x: ``(B, ...)`` floating inputs.
        y: ``(B,)`` integer labels.
        class_counts: ``(C,)`` training counts (all positive).
        partner_index: ``(B,)`` partner position :math:`j(i) \in [0, B)` of each sample.
        beta_draws: ``(B,)`` draws :math:`b_i \in [0, 1]` of :math:`\mathrm{Beta}(\alpha, \alpha)`.

    Returns:
        ``(x_mix, y_a, y_b, lam)``: :math:`\tilde{x}` (``x``'s dtype), ``y``, ``y[partner_index]`` and
        :math:`\lambda = (\xi^* + b) \bmod 1` (``(B,)``, float64 for float64 inputs, else float32).

    Raises:
        TypeError: non-tensor or non-floating ``x``.
        ValueError: mismatched shapes, labels or partner indices out of range, draws outside ``[0, 1]``.
    """
    _check_x(x)
    counts = check_class_counts(class_counts)
    return _from_draws(x, y, counts.to(x.device), partner_index, beta_draws)


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"x must be a floating-point torch.Tensor of shape (B, ...); got {describe(x)}")


def _from_draws(
    x: Tensor, y: Tensor, counts: Tensor, partner_index: Tensor, beta_draws: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`unimix_from_draws` with ``counts`` already validated (float64, on ``x``'s device)."""
    b = x.shape[0]
    c = counts.numel()
    y = _check_labels("y", y, b, c, f"{c} classes in class_counts").to(x.device)
    partner = _check_labels("partner_index", partner_index, b, max(b, 1), f"positions of a batch of {b}").to(x.device)
    if not isinstance(beta_draws, Tensor) or beta_draws.shape != (b,):
        raise ValueError(f"beta_draws must be a tensor of shape ({b},); got {describe(beta_draws)}")
    draws = beta_draws.to(device=x.device, dtype=torch.float64)
    if validation_enabled() and b > 0 and not bool(((draws >= 0) & (draws <= 1)).all()):
        raise ValueError(f"beta_draws must lie in [0, 1]; got values in [{float(draws.min())}, {float(draws.max())}]")
    y_b = y[partner]
    lam = _xi_star(y, y_b, counts) + draws
    lam = torch.where(lam > 1, lam - 1, lam)
    lam_x = lam.to(x.dtype).reshape((b,) + (1,) * (x.ndim - 1))
    x_mix = lam_x * x + (1 - lam_x) * x[partner]
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x_mix, y, y_b, lam.to(out_dtype)


def _beta(alpha: float, size: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``size`` float64 draws of Beta(alpha, alpha) as G1 / (G1 + G2) with Gamma(alpha, 1) draws."""
    shape = torch.full((size,), alpha, dtype=torch.float64, device=device)
    g1 = torch._standard_gamma(shape, generator=generator)
    g2 = torch._standard_gamma(shape, generator=generator)
    total = g1 + g2
    # Both Gamma draws underflow to 0 only for tiny alpha; the Beta is then symmetric, so take 1/2.
    return torch.where(total > 0, g1 / total.clamp_min(torch.finfo(torch.float64).tiny), 0.5)


def unimix(
    x: Tensor,
    y: Tensor,
    class_counts: CountsLike,
    alpha: float = 0.8,
    tau: float = -0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Mix a batch with UniMix (random partners and factors from ``generator``).

    Draws the partners with ``torch.multinomial`` (with replacement, :math:`p_j \propto n_{y_j}^{\tau}`)
    and :math:`b_i \sim \mathrm{Beta}(\alpha, \alpha)` (as :math:`G_1/(G_1+G_2)` with
    :math:`G_k \sim \mathrm{Gamma}(\alpha, 1)`), then applies :func:`unimix_from_draws`. The draws are made
    on ``generator``'s device (on ``x``'s device from the global RNG without a generator).

    Args:
        x: ``(B, ...)`` floating inputs.
        y: ``(B,)`` integer labels.
        class_counts: ``(C,)`` training counts (all positive).
        alpha: Beta parameter :math:`\alpha > 0`; below 1 keeps :math:`\lambda` near :math:`\xi^*` (0.8).
        tau: partner-sampling exponent (-0.5 for CIFAR-10-LT, -0.1 for CIFAR-100-LT).
        generator: the random generator (same seed, same output).

    Returns:
        ``(x_mix, y_a, y_b, lam)``; see :func:`unimix_from_draws`.
    """
    _check_x(x)
    counts = check_class_counts(class_counts)
    return _draw_and_mix(x, y, counts.to(x.device), check_positive("alpha", alpha), check_real("tau", tau), generator)


def _draw_and_mix(
    x: Tensor, y: Tensor, counts: Tensor, alpha: float, tau: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`unimix` with validated ``counts`` (float64 on ``x``'s device) and hyper-parameters."""
    b = x.shape[0]
    c = counts.numel()
    y = _check_labels("y", y, b, c, f"{c} classes in class_counts")
    device = generator.device if generator is not None else x.device
    if b == 0:
        partner = torch.zeros(0, dtype=torch.int64, device=device)
    else:
        p = _probabilities(y.to(device), counts.to(device), tau)
        partner = torch.multinomial(p, b, replacement=True, generator=generator)
    draws = _beta(alpha, b, generator, device)
    with validation_disabled():
        return _from_draws(x, y, counts, partner, draws)


def mixed_loss(
    criterion: Callable[[Tensor, Tensor], Tensor],
    logits: Tensor,
    y_a: Tensor,
    y_b: Tensor,
    lam: Tensor,
) -> Tensor:
    r"""The mixed objective :math:`\frac1B\sum_i \lambda_i \ell(z_i, y^a_i) + (1-\lambda_i)\,\ell(z_i, y^b_i)`.

    Args:
        criterion: a per-sample loss (``reduction="none"``) mapping ``(logits, labels)`` to ``(B,)``.
        logits: ``(B, C)`` model outputs on the mixed inputs.
        y_a: ``(B,)`` first labels.
        y_b: ``(B,)`` partner labels.
        lam: ``(B,)`` mixing factors (or a scalar).

    Returns:
        The scalar loss.

    Raises:
        ValueError: ``criterion`` does not return one loss per sample.
    """
    loss_a = criterion(logits, y_a)
    loss_b = criterion(logits, y_b)
    if loss_a.ndim != 1 or loss_a.shape[0] != logits.shape[0] or loss_b.shape != loss_a.shape:
        raise ValueError(
            "criterion must return per-sample losses of shape "
            f"({logits.shape[0]},) (build it with reduction='none'); got {describe(loss_a)}"
        )
    lam = torch.as_tensor(lam).to(device=loss_a.device, dtype=loss_a.dtype)
    return (lam * loss_a + (1 - lam) * loss_b).mean()


@BATCH_TRANSFORMS.register("unimix")
class UniMix(nn.Module):
    r"""UniMix batch transform: ``transform(x, y, generator=g) -> (x_mix, y_a, y_b, lam)``.

    The trainer builds the loss with ``reduction="none"`` and minimises :func:`mixed_loss`. The class
    counts are a buffer; there is no other state (``set_epoch`` is a no-op: the official configs mix in
    every epoch).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        alpha: Beta parameter :math:`\alpha` (0.8).
        tau: partner-sampling exponent :math:`\tau` (-0.5 for CIFAR-10-LT, -0.1 for CIFAR-100-LT).

    Example:
        >>> mix = UniMix([5000, 500, 50])
        >>> g = torch.Generator().manual_seed(0)
        >>> x_mix, y_a, y_b, lam = mix(torch.randn(8, 3, 4, 4), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2]), generator=g)
    """

    class_counts: Tensor

    def __init__(self, class_counts: CountsLike, alpha: float = 0.8, tau: float = -0.5) -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha)
        self.tau = check_real("tau", tau)
        self.register_buffer("class_counts", check_class_counts(class_counts))

    def forward(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mix the batch ``(x, y)``; see :func:`unimix`."""
        _check_x(x)
        return _draw_and_mix(x, y, self.class_counts.to(device=x.device, dtype=torch.float64), self.alpha, self.tau, generator)

    def set_epoch(self, epoch: int) -> None:
        """No-op (UniMix mixes in every epoch)."""

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.numel()}, alpha={self.alpha}, tau={self.tau}"
