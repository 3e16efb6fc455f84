"""Training objectives and schedule of l_inf-distance nets (Zhang et al., ICML 2021 v1; ICLR 2022 v2).

All objectives take ``(outputs, worst, targets)`` where ``outputs`` are the logits ``s·z`` and ``worst``
is the worst-case margin tensor of :class:`tailwise.models.LinfDistMLP` (``worst[b, y_b] = 0``,
``worst[b, j] = (z̄_j − z̲_y)/(2ε)``), computed with ``ε_train``.

* **v2 "mixture"** (Zhang, Jiang, He, Wang, "Boosting the Certified Robustness of L-infinity Distance
  Nets", ICLR 2022): a clipped hinge plus a scaled cross-entropy,

  .. math:: L = \\frac{1}{B}\\sum_b \\max_j \\mathrm{clip}(\\mathrm{worst}_{bj}, 0, c) + \\lambda\\, \\mathrm{CE}(s z, y),

  with ``c = 1``; equivalently, with ``θ = 2ε``, ``min([max_{j≠y} z_j − z_y + θ]_+, θ)/θ + λ·CE``. The
  weight decays geometrically, ``λ = λ_0 (λ_{end}/λ_0)^r`` with ``r`` the progress of the ``p`` schedule
  (:meth:`LinfMixtureLoss.update`).
* **v1 hinge** (Zhang et al., ICML 2021): ``(1 − mix)·mean_b max_j [worst]_+ + mix·mean_{b,j} [worst]_+``.
* **cross-entropy on the worst case**: ``(1 − mix)·CE(worst, y) + mix·CE(outputs, y)``.

:func:`linf_schedule` reproduces the official per-minibatch ``create_schedule``: cosine learning rate,
the geometric ``p`` ramp ``8 → 1000`` followed by ``p = ∞``, the linear ``ε`` ramp and ``λ``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_logits_target, check_positive, check_probability, describe
from tailwise.functional.ce import _compute_logits
from tailwise.registry import LOSSES

__all__ = [
    "LinfCrossEntropyLoss",
    "LinfHingeLoss",
    "LinfMixtureLoss",
    "LinfSchedule",
    "LinfScheduleState",
    "linf_crossentropy",
    "linf_hinge_loss",
    "linf_mixture_loss",
    "linf_schedule",
]


def _check_inputs(outputs: Tensor, worst: Tensor, targets: Tensor) -> None:
    check_logits_target(outputs, targets, logits_name="outputs", target_name="targets")
    if not isinstance(worst, Tensor) or worst.shape != outputs.shape:
        raise ValueError(f"worst must have the shape of outputs {tuple(outputs.shape)}; got {describe(worst)}")


def linf_mixture_loss(outputs: Tensor, worst: Tensor, targets: Tensor, lam: float, clip: float = 1.0) -> Tensor:
    """v2 objective ``mean_b max_j clamp(worst_bj, 0, clip) + λ·CE(outputs, y)`` (Zhang et al., ICLR 2022)."""
    _check_inputs(outputs, worst, targets)
    clip = check_positive("clip", clip)
    hinge = _compute_logits(worst).clamp(0.0, clip).max(dim=1).values.mean()
    return hinge + lam * F.cross_entropy(_compute_logits(outputs), targets)


def linf_hinge_loss(outputs: Tensor, worst: Tensor, targets: Tensor, mix: float = 0.25) -> Tensor:
    """v1 hinge ``(1 − mix)·mean_b max_j [worst]_+ + mix·mean_{b,j} [worst]_+`` (Zhang et al., ICML 2021)."""
    _check_inputs(outputs, worst, targets)
    mix = check_probability("mix", mix)
    pos = _compute_logits(worst).clamp(min=0.0)
    return (1.0 - mix) * pos.max(dim=1).values.mean() + mix * pos.mean()


def linf_crossentropy(outputs: Tensor, worst: Tensor, targets: Tensor, mix: float = 0.0) -> Tensor:
    """Cross-entropy on the worst case ``(1 − mix)·CE(worst, y) + mix·CE(outputs, y)``."""
    _check_inputs(outputs, worst, targets)
    mix = check_probability("mix", mix)
    return (1.0 - mix) * F.cross_entropy(_compute_logits(worst), targets) + mix * F.cross_entropy(_compute_logits(outputs), targets)


@LOSSES.register("linf_mixture")
class LinfMixtureLoss(nn.Module):
    """v2 objective of l_inf-distance nets: clipped hinge + ``λ``-scaled cross-entropy (official ``mixture``).

    Args:
        lam0: initial cross-entropy weight ``λ_0``.
        lam_end: final weight ``λ_end``; ``update(r)`` sets ``λ = λ_0 (λ_end/λ_0)^r``.
        clip: hinge clip ``c`` (1 in the official code).

    Called as ``loss(outputs, worst, targets)``.
    """

    needs_worst = True

    def __init__(self, lam0: float = 0.1, lam_end: float = 0.0005, clip: float = 1.0) -> None:
        super().__init__()
        self.lam0 = check_positive("lam0", lam0)
        self.lam_end = check_positive("lam_end", lam_end)
        self.clip = check_positive("clip", clip)
        self.lam = self.lam0

    def update(self, ratio: float) -> float:
        """Set ``λ = λ_0·exp(log(λ_end/λ_0)·r)`` for progress ``r ∈ [0, 1]``; returns ``λ``."""
        r = check_probability("ratio", ratio)
        self.lam = self.lam0 * math.exp(math.log(self.lam_end / self.lam0) * r)
        return self.lam

    def forward(self, outputs: Tensor, worst: Tensor, targets: Tensor) -> Tensor:
        return linf_mixture_loss(outputs, worst, targets, self.lam, self.clip)

    def get_extra_state(self) -> dict[str, float]:
        return {"lam": self.lam}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.lam = float(state["lam"])

    def extra_repr(self) -> str:
        return f"lam0={self.lam0}, lam_end={self.lam_end}, clip={self.clip}, lam={self.lam:.4g}"


class _LinfMixObjective(nn.Module):
    """A ``mix``-weighted l_inf-net objective without schedule: ``loss(outputs, worst, targets)`` calls ``_objective``."""

    needs_worst = True
    _objective: Callable[[Tensor, Tensor, Tensor, float], Tensor]

    def __init__(self, mix: float) -> None:
        super().__init__()
        self.mix = check_probability("mix", mix)

    def update(self, ratio: float) -> None:
        """No schedule (kept for a uniform interface with :class:`LinfMixtureLoss`)."""

    def forward(self, outputs: Tensor, worst: Tensor, targets: Tensor) -> Tensor:
        return self._objective(outputs, worst, targets, self.mix)


@LOSSES.register("linf_hinge")
class LinfHingeLoss(_LinfMixObjective):
    """v1 hinge objective of l_inf-distance nets (official ``hinge``); see :func:`linf_hinge_loss`."""

    _objective = staticmethod(linf_hinge_loss)

    def __init__(self, mix: float = 0.25) -> None:
        super().__init__(mix)


@LOSSES.register("linf_crossentropy")
class LinfCrossEntropyLoss(_LinfMixObjective):
    """Worst-case cross-entropy (official ``crossentropy``); see :func:`linf_crossentropy`."""

    _objective = staticmethod(linf_crossentropy)

    def __init__(self, mix: float = 0.0) -> None:
        super().__init__(mix)


class LinfScheduleState(NamedTuple):
    """Hyperparameters of one minibatch (see :class:`LinfSchedule`)."""

    eps: float
    p: float
    ratio_p: float
    lam: float | None
    lrs: tuple[float, ...]


class LinfSchedule:
    """Per-minibatch schedule of l_inf-distance-net training (official ``create_schedule``).

    With ``epochs = (e_eps_start, e_eps_end, e_p_start, e_p_end, total)``, ``N`` minibatches per epoch
    and ``ratio(a, b) = clip(((epoch − a)·N + minibatch)/((b − a)·N), 0, 1)`` (1 from ``a`` on when
    ``a = b``):

    * learning rates ``lr_g·½(1 + cos(π·ratio(0, total)))`` for every parameter group ``g``;
    * ``ε = ε_train·ratio(e_eps_start, e_eps_end)`` (linear ramp; the v2 commands use ``0, 0``);
    * ``p = p_start (p_end/p_start)^{r_p}`` with ``r_p = ratio(e_p_start, e_p_end)``, and ``p = ∞`` once
      ``r_p ≥ 1`` (when ``p_end ≥ 100``; otherwise ``p_end``);
    * ``λ = λ_0 (λ_end/λ_0)^{r_p}`` when ``lam0``/``lam_end`` are given.

    Args:
        epochs: the five epoch boundaries.
        batches_per_epoch: minibatches per epoch ``N``.
        eps_train: final training radius (in normalised input units).
        p_start: initial norm.
        p_end: norm reached at ``e_p_end``.
        lr: base learning rate of each optimizer parameter group (official: ``(0.03, 0.006)`` for the
            weights and the scalar).
        lam0: initial mixture weight (``None``: no ``λ``).
        lam_end: final mixture weight.
    """

    def __init__(
        self,
        epochs: Sequence[int],
        batches_per_epoch: int,
        eps_train: float,
        p_start: float = 8.0,
        p_end: float = 1000.0,
        lr: float | Sequence[float] = (0.03, 0.006),
        lam0: float | None = None,
        lam_end: float | None = None,
    ) -> None:
        ep = [int(e) for e in epochs]
        if len(ep) != 5 or any(e < 0 for e in ep):
            raise ValueError(f"epochs must be 5 non-negative ints (eps_start, eps_end, p_start, p_end, total); got {list(epochs)!r}")
        if not (ep[0] <= ep[1] and ep[2] <= ep[3] and max(ep[:4]) <= ep[4] and ep[4] > 0):
            raise ValueError(f"epochs must satisfy eps_start <= eps_end, p_start <= p_end, all <= total > 0; got {ep}")
        if isinstance(batches_per_epoch, bool) or not isinstance(batches_per_epoch, int) or batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be a positive integer; got {batches_per_epoch!r}")
        self.epochs = tuple(ep)
        self.batches_per_epoch = batches_per_epoch
        self.eps_train = check_positive("eps_train", eps_train, allow_zero=True)
        self.p_start = check_positive("p_start", p_start)
        self.p_end = check_positive("p_end", p_end)
        if self.p_start < 1 or self.p_end < 1:
            raise ValueError(f"p_start and p_end must be >= 1; got {p_start} and {p_end}")
        lrs = [lr] if isinstance(lr, (int, float)) else list(lr)
        self.lrs = tuple(check_positive("lr", v, allow_zero=True) for v in lrs)
        if (lam0 is None) != (lam_end is None):
            raise ValueError("lam0 and lam_end must be given together")
        self.lam0 = None if lam0 is None else check_positive("lam0", lam0)
        self.lam_end = None if lam_end is None else check_positive("lam_end", lam_end)

    def ratio(self, epoch: int, minibatch: int, start: int, end: int) -> float:
        """``clip(((epoch − start)·N + minibatch)/((end − start)·N), 0, 1)``."""
        n = self.batches_per_epoch
        done = (epoch - start) * n + minibatch
        if end <= start:
            return 1.0 if done >= 0 else 0.0
        return min(max(done / ((end - start) * n), 0.0), 1.0)

    def __call__(self, epoch: int, minibatch: int = 0) -> LinfScheduleState:
        e0, e1, e2, e3, total = self.epochs
        r_lr = self.ratio(epoch, minibatch, 0, total)
        factor = 0.5 * (1.0 + math.cos(math.pi * r_lr))
        r_eps = self.ratio(epoch, minibatch, e0, e1)
        r_p = self.ratio(epoch, minibatch, e2, e3)
        if r_p >= 1.0:
            p = math.inf if self.p_end >= 100 else self.p_end
        else:
            p = self.p_start * (self.p_end / self.p_start) ** r_p
        lam = None
        if self.lam0 is not None and self.lam_end is not None:
            lam = self.lam0 * math.exp(math.log(self.lam_end / self.lam0) * r_p)
        return LinfScheduleState(self.eps_train * r_eps, p, r_p, lam, tuple(v * factor for v in self.lrs))

    def apply(
        self,
        epoch: int,
        minibatch: int,
        model: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss: Any = None,
    ) -> LinfScheduleState:
        """Compute the state and set it: ``model.set_p(p)``, group learning rates, ``loss.update(r_p)``."""
        state = self(epoch, minibatch)
        if model is not None:
            model.set_p(state.p)
        if optimizer is not None:
            groups = optimizer.param_groups
            if len(groups) != len(state.lrs):
                raise ValueError(f"optimizer must have {len(state.lrs)} parameter group(s) (one per lr); got {len(groups)}")
            for group, lr in zip(groups, state.lrs):
                group["lr"] = lr
        if loss is not None and hasattr(loss, "update"):
            loss.update(state.ratio_p)
        return state


def linf_schedule(
    epochs: Sequence[int],
    batches_per_epoch: int,
    eps_train: float,
    p_start: float = 8.0,
    p_end: float = 1000.0,
    lr: float | Sequence[float] = (0.03, 0.006),
    lam0: float | None = None,
    lam_end: float | None = None,
) -> LinfSchedule:
    """Build a :class:`LinfSchedule` (the official ``create_schedule`` semantics, per minibatch).

    Example (CIFAR-10 8/255, v2):
        >>> sched = linf_schedule([0, 0, 100, 1250, 1300], 98, 0.09411 / 0.2009, lam0=0.1, lam_end=0.0005)
        >>> sched(1250, 0).p
        inf
    """
    return LinfSchedule(epochs, batches_per_epoch, eps_train, p_start, p_end, lr, lam0, lam_end)
