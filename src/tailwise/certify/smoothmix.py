"""SmoothMix: confidence-calibrated training of smoothed classifiers (Jeong et al., NeurIPS 2021).

Jongheon Jeong, Sejun Park, Minkyu Kim, Heung-Chang Lee, Doguk Kim, Jinwoo Shin, "SmoothMix: Training
Confidence-calibrated Smoothed Classifiers for Certified Robustness", NeurIPS 2021.

With ``f`` the base network (logits), ``F = softmax ∘ f`` and ``m`` noise draws ``δ_1..δ_m ~ N(0, σ²I)``
shared by every term, the Monte-Carlo smoothed soft classifier is
``F̂(x) = (1/m) Σ_i F(x + δ_i)``. For a mini-batch ``(x, y)``:

1. **Adversary** (model in eval mode, parameters frozen): ``a⁰ = x`` and, for ``t = 0..T−1``
   (storing ``x_init = a^t`` when ``t = mix_step``),

   .. math::

       g = \\nabla_a \\sum_b -\\log \\max(\\hat F(a)_{y_b}, 10^{-20}), \\qquad
       a^{t+1} = \\mathrm{clip}_{[0,1]}\\Big(\\Pi_{\\text{maxnorm}}\\big(a^t + \\alpha\\, g / (\\lVert g\\rVert_2 + 10^{-8})\\big)\\Big),

   ``x_adv = a^T``; ``x_init`` is projected on the l2 ball of radius ``w·maxnorm_s`` around ``x``
   (``maxnorm_s = α·mix_step`` by default, ``w`` the warm-up factor). The projection is
   ``Tensor.renorm(p=2, dim=0, maxnorm)``.
2. **Clean side** (model in its own mode): ``L_CE = mean_{i,b} CE(f(x_init + δ_i), y)``; ``F̂_init`` is the
   average softmax over the ``m`` copies (not detached by default).
3. **Mixup**: ``λ_b ~ U[0, 1/2)``; ``x_mix = (1−λ) x_init + λ x_adv``;
   ``ŷ_mix = (1−λ) F̂_init + λ u`` with ``u`` the uniform distribution over the ``C`` classes.
4. **Loss**: with the confidence mask ``1[argmax F̂_init,b = y_b]``,

   .. math::

       L = L_{CE} + \\eta\\, w \\cdot \\frac{1}{mB} \\sum_{i,b} 1[\\arg\\max \\hat F_{init,b} = y_b]\\,
           \\mathrm{KL}\\big(\\hat y_{mix,b} \\,\\|\\, F(x_{mix,b} + \\delta_i)\\big).

The defaults reproduce the official code (jh-jeong/smoothmix ``code/train.py``): gradients flow into the
mixup target through ``F̂_init`` (``detach_target=False``), the mean runs over all ``m·B`` terms, masked
ones included, and the official training loop splits each loaded batch into ``m`` chunks with one
optimizer step per chunk (:func:`smoothmix_train_step`, ``per_chunk=True``). The warm-up factor is
``w = min(1, (epoch + 1)/warmup_epochs)`` (set by :meth:`SmoothMixLoss.set_epoch`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_logits_target, check_positive, describe, validation_enabled
from tailwise.certify.gaussian_augmentation import _noises_for
from tailwise.registry import LOSSES

__all__ = ["SmoothMixLoss", "smoothmix_train_step", "smoothmix_warmup"]


def smoothmix_warmup(epoch: int, warmup_epochs: int = 10) -> float:
    """The SmoothMix warm-up factor ``min(1, (epoch + 1)/warmup_epochs)`` (1 when ``warmup_epochs <= 0``)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (int(epoch) + 1) / float(warmup_epochs))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def _batch_view(v: Tensor, x: Tensor) -> Tensor:
    return v.view(-1, *([1] * (x.ndim - 1)))


def _project(a: Tensor, x0: Tensor, maxnorm: float | None) -> Tensor:
    """``clip_[0,1](x0 + renorm(a − x0))`` (the renorm only when ``maxnorm`` is set)."""
    if maxnorm is not None:
        a = x0 + (a - x0).renorm(p=2, dim=0, maxnorm=maxnorm)
    return a.clamp(0.0, 1.0).detach()


def _softmax(logits: Tensor) -> Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.softmax(logits, dim=1)


@LOSSES.register("smoothmix")
class SmoothMixLoss(nn.Module):
    """The SmoothMix training objective (Jeong et al., NeurIPS 2021); see the module docstring for the maths.

    Called as ``loss(model, x, y, generator=None, noises=None, lam=None, warmup=None)`` on one chunk
    ``(x, y)`` with inputs in ``[0, 1]`` (normalisation belongs inside the model). It runs the adversary,
    the clean and mixed forwards, and returns the scalar loss (and, with ``return_parts=True``, a dict of
    the intermediate tensors). The defaults are the CIFAR-10 ``σ = 0.25`` command of the official
    ``EXPERIMENTS.MD`` (``m = 2, T = 4, α = 0.5, η = 5``).

    Args:
        sigma: noise standard deviation ``σ``.
        num_noises: number of noise draws ``m`` (official ``--num-noise-vec``).
        num_steps: adversary steps ``T``.
        alpha: l2 step size ``α`` of the adversary.
        mix_step: step whose iterate becomes ``x_init`` (0: the clean input; 1: the one-step adversary).
        eta: weight ``η`` of the mixup term.
        maxnorm: radius of the l2 ball of the adversary (``None``: only clamping to ``[0, 1]``).
        maxnorm_s: radius for ``x_init`` before warm-up (``None``: ``α·mix_step``).
        warmup_epochs: epochs of the linear warm-up of ``η`` and ``maxnorm_s`` (official ``--warmup 10``).
        detach_target: detach ``F̂_init`` in the mixup target (a named deviation; the official code does
            not detach, so the default is ``False``).
    """

    needs_model = True

    def __init__(
        self,
        sigma: float,
        num_noises: int = 2,
        num_steps: int = 4,
        alpha: float = 0.5,
        mix_step: int = 0,
        eta: float = 5.0,
        maxnorm: float | None = None,
        detach_target: bool = False,
        maxnorm_s: float | None = None,
        warmup_epochs: int = 10,
    ) -> None:
        super().__init__()
        self.sigma = check_positive("sigma", sigma)
        self.num_noises = _check_int("num_noises", num_noises, 1)
        self.num_steps = _check_int("num_steps", num_steps, 0)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.mix_step = _check_int("mix_step", mix_step, 0)
        self.eta = check_positive("eta", eta, allow_zero=True)
        if maxnorm is not None and (isinstance(maxnorm, float) and math.isnan(maxnorm)):
            maxnorm = None
        self.maxnorm = None if maxnorm is None else check_positive("maxnorm", maxnorm, allow_zero=True)
        self.maxnorm_s = None if maxnorm_s is None else check_positive("maxnorm_s", maxnorm_s, allow_zero=True)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        self.detach_target = bool(detach_target)
        self.warmup_factor = 1.0

    # -- trainer hooks ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Set the warm-up factor ``w = min(1, (epoch + 1)/warmup_epochs)`` (epochs 0-indexed)."""
        self.warmup_factor = smoothmix_warmup(epoch, self.warmup_epochs)

    def get_extra_state(self) -> dict[str, float]:
        return {"warmup_factor": self.warmup_factor}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.warmup_factor = float(state["warmup_factor"])

    def chunks(self, x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Split a loaded batch into ``m`` chunks, as the official loop does before each optimizer step."""
        return list(zip(torch.chunk(x, self.num_noises), torch.chunk(y, self.num_noises)))

    # -- the adversary ------------------------------------------------------------------------------
    def attack(self, model: nn.Module, x: Tensor, y: Tensor, noises: Tensor, warmup: float = 1.0) -> tuple[Tensor, Tensor]:
        """SmoothMix PGD on the smoothed soft classifier; returns ``(x_init, x_adv)``.

        The model is put in eval mode with its parameters frozen during the attack, and restored after.
        """
        maxnorm_s = self.alpha * self.mix_step if self.maxnorm_s is None else self.maxnorm_s
        maxnorm_s = warmup * maxnorm_s
        was_training = model.training
        flags = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            adv = x.detach()
            init = x.detach()
            for t in range(self.num_steps):
                if t == self.mix_step:
                    init = adv.clone()
                adv = adv.clone().requires_grad_(True)
                avg = sum(_softmax(model(adv + noise)) for noise in noises) / noises.shape[0]
                nll = F.nll_loss(torch.log(avg.clamp(min=1e-20)), y, reduction="sum")
                (grad,) = torch.autograd.grad(nll, [adv])
                norm = grad.reshape(grad.shape[0], -1).norm(dim=1)
                grad = grad / _batch_view(norm + 1e-8, grad)
                adv = _project(adv.detach() + self.alpha * grad.to(adv.dtype), x, self.maxnorm)
            init = _project(init, x, maxnorm_s)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)
        return init, adv.detach()

    # -- the loss -----------------------------------------------------------------------------------
    def forward(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        noises: Tensor | None = None,
        lam: Tensor | None = None,
        warmup: float | None = None,
        return_parts: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """SmoothMix loss on one chunk.

        Args:
            model: base classifier, inputs in ``[0, 1]``.
            x: inputs ``[B, ...]`` in ``[0, 1]``.
            y: labels ``[B]`` (int64).
            generator: random generator on ``x``'s device for the noise and ``λ`` (``None``: global).
            noises: optional ``[m, B, ...]`` noise draws, already multiplied by ``σ`` (drawn when ``None``).
            lam: optional mixup coefficients ``[B]`` in ``[0, 1/2)`` (drawn as ``rand(B)/2`` when ``None``).
            warmup: warm-up factor ``w`` (``None``: the value set by :meth:`set_epoch`, 1.0 initially).
            return_parts: also return a dict with ``x_init``, ``x_adv``, ``clean_avg_softmax``,
                ``mixed_inputs``, ``mixed_targets``, ``loss_xent`` and ``loss_mixup`` (``[m·B]``,
                noise-major), ``ind_correct`` (``[m·B]``), ``noises`` and ``lam``.

        Returns:
            The scalar loss, or ``(loss, parts)``.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor; got {describe(x)}")
        if x.ndim < 2:
            raise ValueError(f"x must have a batch dimension, shape (B, ...); got shape {tuple(x.shape)}")
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
            raise ValueError(f"y must be an int64 tensor of shape ({x.shape[0]},); got {describe(y)}")
        if validation_enabled() and (bool(x.detach().min() < 0) or bool(x.detach().max() > 1)):
            raise ValueError(
                f"x must lie in [0, 1] (normalise inside the model); got values in "
                f"[{float(x.detach().min()):.4g}, {float(x.detach().max()):.4g}]"
            )
        w = self.warmup_factor if warmup is None else check_positive("warmup", warmup, allow_zero=True)
        bsz = x.shape[0]
        noises = _noises_for(x, self.num_noises, self.sigma, generator, noises)
        if lam is None:
            lam = torch.rand(bsz, generator=generator, device=x.device, dtype=x.dtype) / 2
        else:
            if not isinstance(lam, Tensor) or lam.shape != (bsz,):
                raise ValueError(f"lam must be a tensor of shape ({bsz},); got {describe(lam)}")
            lam = lam.to(device=x.device, dtype=x.dtype)
        m = noises.shape[0]

        x_init, x_adv = self.attack(model, x, y, noises, w)

        logits_clean = model((x_init.unsqueeze(0) + noises).reshape(m * bsz, *x.shape[1:]))
        check_logits_target(logits_clean, y.repeat(m), logits_name="model output")
        if logits_clean.dtype in (torch.float16, torch.bfloat16):
            logits_clean = logits_clean.float()
        num_classes = logits_clean.shape[1]
        targets_rep = y.repeat(m)
        loss_xent = F.cross_entropy(logits_clean, targets_rep, reduction="none")
        clean_avg = F.softmax(logits_clean, dim=1).view(m, bsz, num_classes).mean(0)

        lam_x = _batch_view(lam, x)
        mixed_inputs = (1 - lam_x) * x_init + lam_x * x_adv
        target_soft = clean_avg.detach() if self.detach_target else clean_avg
        lam_c = lam.to(clean_avg.dtype).view(-1, 1)
        mixed_targets = (1 - lam_c) * target_soft + lam_c / num_classes

        logits_mixed = model((mixed_inputs.unsqueeze(0) + noises).reshape(m * bsz, *x.shape[1:]))
        if logits_mixed.dtype in (torch.float16, torch.bfloat16):
            logits_mixed = logits_mixed.float()
        log_probs_mixed = F.log_softmax(logits_mixed, dim=1)
        loss_mixup = F.kl_div(log_probs_mixed, mixed_targets.repeat(m, 1), reduction="none").sum(1)
        ind_correct = (clean_avg.detach().argmax(1) == y).to(loss_mixup.dtype).repeat(m)

        loss = loss_xent.mean() + self.eta * w * (ind_correct * loss_mixup).mean()
        if not return_parts:
            return loss
        parts = {
            "x_init": x_init,
            "x_adv": x_adv,
            "clean_avg_softmax": clean_avg,
            "mixed_inputs": mixed_inputs,
            "mixed_targets": mixed_targets,
            "loss_xent": loss_xent,
            "loss_mixup": loss_mixup,
            "ind_correct": ind_correct,
            "noises": noises,
            "lam": lam,
        }
        return loss, parts


def smoothmix_train_step(
    loss_fn: SmoothMixLoss,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
    warmup: float | None = None,
    per_chunk: bool = True,
) -> Tensor:
    """One loaded batch of SmoothMix training.

    With ``per_chunk=True`` (official), the batch is split into ``m`` chunks and each chunk does its own
    forward, backward and optimizer step (effective SGD batch ``B/m``); with ``per_chunk=False`` the
    whole batch makes one step.

    Returns:
        The detached mean of the chunk losses.
    """
    pieces = loss_fn.chunks(x, y) if per_chunk else [(x, y)]
    losses = []
    for xc, yc in pieces:
        loss = loss_fn(model, xc, yc, generator=generator, warmup=warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean()
