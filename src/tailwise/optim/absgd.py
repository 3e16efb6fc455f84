r"""ABSGD: attentional-biased SGD (per-sample DRO weights with a moving normaliser).

Qi, Xu, Jin, Yin and Yang, "Attentional-Biased Stochastic Gradient Descent", TMLR 2023
(arXiv 2012.06951); official code ``qiqi-helloworld/ABSGD`` at ``a2b26f5`` (``mylosses.py``).

The mini-batch KL-regularised DRO problem :math:`\max_p \sum_i p_i \ell_i - \lambda\,\mathrm{KL}(p\,\|\,1/B)`
is solved by :math:`p_i \propto \exp(\ell_i/\lambda)`. ABSGD keeps a moving average of the normaliser,

.. math::

    e_i = \exp(\ell_i / \lambda), \qquad
    u_t = (1 - \gamma)\,u_{t-1} + \gamma\,\alpha\,\tfrac1B \textstyle\sum_i e_i, \qquad
    p_i = \frac{e_i}{u_t\,B}\ \text{(detached)}, \qquad
    \mathcal{L} = \textstyle\sum_i p_i\,\ell_i,

with :math:`u_0 = 0`, and steps momentum SGD on :math:`\mathcal L` (gradient :math:`\sum_i p_i \nabla \ell_i`;
no gradient through :math:`p` or :math:`u`). :math:`\lambda > 0` up-weights hard / minority samples,
:math:`\lambda < 0` down-weights high-loss samples (noisy labels), :math:`\lambda \to \infty` is plain SGD.

Official quirks and what this module does about them:

* ``exp(l/λ)`` overflows (LDAM with :math:`s = 30` reaches :math:`\ell \approx 280`); by default
  (``stable=True``) everything is computed in log-space — :math:`\log u` is the state and
  :math:`\log \mathrm{mean}(e)` a log-sum-exp — which gives the same numbers wherever the official code
  does not overflow. ``stable=False`` (alias ``mode="official"``) runs the plain exponentials.
* :math:`u_0 = 0` makes :math:`\sum_i p_i = 1/(\gamma\alpha)` on the first step (an LR multiplier);
  ``u_init="first_batch"`` starts from :math:`u_0 = \alpha\,\mathrm{mean}(e)` instead (opt-in).
  At steady state :math:`\sum_i p_i \approx 1/\alpha`, so :math:`\alpha < 1` also scales the LR.
* the official :math:`u` keeps the autograd graph of every step alive; here it is detached.
* ``myLambda >= 200`` switches to the plain mean :math:`\frac1B\sum_i \ell_i` (``plain_lambda_threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import (
    check_in_choices,
    check_logits_target,
    check_positive,
    check_weight,
    compiling,
    describe,
)
from tailwise.functional._fused import _transposed, log_softmax_rows
from tailwise.registry import LOSSES

__all__ = ["ABSGD", "ABSGDLoss", "absgd_weights"]

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]

_SYNC = ("local", "global")
_U_INIT = ("official", "first_batch")
_MODES = ("stable", "official")


def _check_lam(lam: float, name: str = "lam") -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{name} must be a number; got {describe(lam)}")
    v = float(lam)
    if math.isnan(v) or v == 0.0:
        raise ValueError(f"{name} must be a non-zero number (inf for plain SGD); got {lam!r}")
    return v


def _check_gamma(gamma: float) -> float:
    g = check_positive("gamma", gamma)
    if g > 1:
        raise ValueError(f"gamma must lie in (0, 1]; got {gamma!r}")
    return g


def absgd_weights(
    per_sample_loss: Tensor,
    u_prev: Tensor | float,
    lam: float,
    gamma: float,
    alpha: float,
    log_space: bool = True,
    *,
    batch_stat: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One ABSGD weighting step: the weights :math:`p_i` and the updated normaliser.

    .. math::

        u_t = (1-\gamma)u_{t-1} + \gamma\alpha\,\mathrm{mean}_j\, e^{\ell_j/\lambda}, \qquad
        p_i = e^{\ell_i/\lambda} / (u_t B)

    Args:
        per_sample_loss: losses :math:`\ell_i` of shape ``(B,)`` (detached internally).
        u_prev: the previous normaliser — :math:`\log u_{t-1}` when ``log_space`` (``-inf`` for
            :math:`u_0 = 0`), otherwise :math:`u_{t-1}` itself (``0`` initially).
        lam: temperature :math:`\lambda \neq 0` (negative for noisy labels).
        gamma: moving-average rate :math:`\gamma \in (0, 1]` (official ``drogamma``).
        alpha: scale :math:`\alpha > 0` of the batch term (official ``abAlpha``).
        log_space: compute with log-sum-exp and return :math:`\log u_t` (cannot overflow); ``False``
            reproduces the official plain exponentials (may overflow to ``inf`` / ``nan``).
        batch_stat: the statistic of the batch that defines the normaliser, when it is not this
            batch (e.g. all ranks'): :math:`\log \mathrm{mean}_j e^{\ell_j/\lambda}` when ``log_space``,
            else :math:`\mathrm{mean}_j e^{\ell_j/\lambda}`. :math:`B` in :math:`p_i` stays this batch's size.

    Returns:
        ``(p, u_new)``: detached weights ``(B,)`` and the new normaliser (:math:`\log u_t` when
        ``log_space``), both 0-d/1-d tensors in the loss dtype (float32 at least).
    """
    if not isinstance(per_sample_loss, Tensor) or per_sample_loss.ndim != 1:
        raise ValueError(f"per_sample_loss must be a 1-D tensor of per-sample losses; got {describe(per_sample_loss)}")
    lam = _check_lam(lam)
    gamma = _check_gamma(gamma)
    alpha = check_positive("alpha", alpha)
    loss = per_sample_loss.detach()
    if loss.dtype in (torch.float16, torch.bfloat16):
        loss = loss.float()
    n = loss.numel()
    scores = loss / lam
    u_prev_t = torch.as_tensor(u_prev, dtype=loss.dtype, device=loss.device)
    if log_space:
        log_mean = torch.logsumexp(scores, 0) - math.log(max(n, 1)) if batch_stat is None else batch_stat.to(scores)
        decay = math.log1p(-gamma) if gamma < 1 else -math.inf
        log_u = torch.logaddexp(u_prev_t + decay, log_mean + math.log(gamma * alpha))
        p = torch.exp(scores - log_u - math.log(max(n, 1)))
        return p, log_u
    e = torch.exp(scores)
    mean_e = e.mean() if batch_stat is None else batch_stat.to(e)
    u = (1.0 - gamma) * u_prev_t + gamma * alpha * mean_e
    p = e / (u * n)
    return p, u


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _ce_per_sample(logits: Tensor, target: Tensor) -> Tensor:
    return F.nll_loss(log_softmax_rows(logits), target, reduction="none")


@LOSSES.register("absgd")
class ABSGDLoss(nn.Module):
    r"""ABSGD objective :math:`\sum_i p_i \ell_i` around any per-sample base loss, with its state.

    The per-sample loss is :math:`\ell_i = w_{y_i}\,\mathrm{base}(z, y)_i` with optional class weights
    :math:`w` (DRW-style, through :meth:`set_weight`; the official code applies them inside the
    criterion with ``reduction='none'``, which is the same product for CE and LDAM). Then the weights
    :math:`p_i` come from :func:`absgd_weights` and the state :math:`u` is updated on every call.

    Two-stage schedule (official ``train.py``): for epochs ``< start_epoch`` the temperature is
    ``first_stage_lam`` (default ``inf``: plain momentum SGD on the mean loss), then ``lam``. A temperature
    ``>= plain_lambda_threshold`` (official: 200) also means the plain mean :math:`\frac1B\sum_i\ell_i`
    (no division by :math:`\sum w`), and leaves :math:`u` untouched. The trainer calls :meth:`set_epoch`.

    Args:
        base: per-sample loss ``base(logits, target) -> (B,)``, or a registered loss name (``"ce"``,
            ``"ldam"``, ...) built by ``LOSSES.build(base, {**base_params, "reduction": "none"},
            class_counts=..., num_classes=...)``. ``"ce"`` falls back to ``F.cross_entropy(reduction="none")``
            when no ``"ce"`` loss is registered.
        lam: temperature :math:`\lambda` of the second stage (README CIFAR-10: 5; CIFAR-100: 3;
            noisy labels: -5).
        gamma: moving-average rate :math:`\gamma` (``drogamma``; default 0.9 as in the PyPI package).
        alpha: :math:`\alpha` (``abAlpha``; default 1, so that :math:`\sum p \to 1` and the LR is not
            silently rescaled; the README uses 0.5 / 0.3).
        stable: log-space computation (default). ``False`` is the official plain-exp computation.
        mode: ``"stable"`` or ``"official"``; overrides ``stable`` when given.
        start_epoch: first epoch of the ABSGD stage (official ``lamda_shots``, 160 in the README recipe;
            default 0: ABSGD from the start).
        first_stage_lam: temperature before ``start_epoch`` (official ``init_lamda``; ``inf`` = plain).
        plain_lambda_threshold: temperatures at or above this give the plain mean (official 200;
            ``None`` disables the rule).
        u_init: ``"official"`` (:math:`u_0 = 0`) or ``"first_batch"`` (:math:`u_0 = \alpha\,\mathrm{mean}(e)`).
        sync: under DDP, ``"global"`` (default) computes :math:`\mathrm{mean}(e)` over all ranks' batches
            (an ``all_gather`` of each rank's detached :math:`\log\sum_i e_i` and count, which is the
            normaliser of the all-gathered losses), so :math:`u` is identical on every rank and DDP's
            gradient averaging reproduces the official single-process (DataParallel) update on the
            global batch; ``"local"`` uses the rank's batch only, and :math:`u` is per-rank state.
        weight: initial class weights ``(C,)`` (``None``: unweighted).
        class_counts: training class counts, passed to a registry-built base loss.
        num_classes: number of classes (sizes the weight buffer).
        base_params: parameters of a registry-built base loss.

    In evaluation mode (``loss.eval()``) the loss is the plain mean :math:`\frac1B\sum_i \ell_i`, and
    :math:`u` is neither updated nor synchronised (so a validation pass cannot disturb the state).

    Attributes:
        last_weights: the detached :math:`p` of the last call (``None`` in the plain stage).
    """

    log_u: Tensor
    weight: Tensor

    def __init__(
        self,
        base: PerSampleLoss | str = "ce",
        lam: float = 5.0,
        gamma: float = 0.9,
        alpha: float = 1.0,
        stable: bool = True,
        mode: str | None = None,
        start_epoch: int = 0,
        first_stage_lam: float = math.inf,
        plain_lambda_threshold: float | None = 200.0,
        u_init: str = "official",
        sync: str = "global",
        weight: Tensor | Sequence[float] | None = None,
        class_counts: Tensor | Sequence[float] | None = None,
        num_classes: int | None = None,
        base_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.lam = _check_lam(lam)
        self.first_stage_lam = _check_lam(first_stage_lam, "first_stage_lam")
        self.gamma = _check_gamma(gamma)
        self.alpha = check_positive("alpha", alpha)
        if mode is not None:
            check_in_choices("mode", mode, _MODES)
            stable = mode == "stable"
        self.stable = bool(stable)
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be a non-negative int; got {describe(start_epoch)}")
        self.start_epoch = start_epoch
        self.plain_lambda_threshold = None if plain_lambda_threshold is None else float(plain_lambda_threshold)
        self.u_init = check_in_choices("u_init", u_init, _U_INIT)
        self.sync = check_in_choices("sync", sync, _SYNC)
        self.base = self._build_base(base, base_params, class_counts, num_classes)
        # the default base, cross-entropy, runs fused with the weighting (_WeightedCrossEntropy)
        self._ce_base = base == "ce" and not base_params
        self._unit_weight_key: tuple[Any, ...] | None = None
        if num_classes is None and class_counts is not None:
            num_classes = len(class_counts)
        if num_classes is None and weight is not None:
            num_classes = len(weight)
        self.num_classes = num_classes
        self.epoch = 0
        self.last_weights: Tensor | None = None
        self.register_buffer("log_u", torch.tensor(-math.inf, dtype=torch.float64))
        self.register_buffer("weight", None if num_classes is None else torch.ones(num_classes, dtype=torch.float64))
        if weight is not None:
            self.set_weight(weight)

    @staticmethod
    def _build_base(
        base: PerSampleLoss | str,
        base_params: Mapping[str, Any] | None,
        class_counts: Tensor | Sequence[float] | None,
        num_classes: int | None,
    ) -> PerSampleLoss:
        if not isinstance(base, str):
            if not callable(base):
                raise TypeError(f"base must be a per-sample loss callable or a registered loss name; got {describe(base)}")
            if base_params:
                raise ValueError("base_params is only used with a registered base loss name; got a callable base")
            return base
        import tailwise.losses  # noqa: F401  (registers the loss classes)

        if base == "ce" and "ce" not in LOSSES and not base_params:
            return _ce_per_sample
        params = {**dict(base_params or {}), "reduction": "none"}
        context: dict[str, Any] = {}
        if class_counts is not None:
            context["class_counts"] = class_counts
        if num_classes is not None:
            context["num_classes"] = num_classes
        return LOSSES.build(base, params, **context)

    # ----------------------------------------------------------------- trainer hooks and state
    def set_epoch(self, epoch: int) -> None:
        """Select the stage of ``epoch`` (0-indexed)."""
        self.epoch = int(epoch)

    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Set the per-class weights multiplying the per-sample losses (``None``: all ones)."""
        if weight is None:
            if self.weight is not None:
                self.weight.fill_(1.0)
            return
        if self.num_classes is None:
            self.num_classes = len(weight)
        w = check_weight(weight, self.num_classes)
        assert w is not None
        w = torch.as_tensor(w, dtype=torch.float64)
        if self.weight is None:
            self.weight = w.clone()
        else:
            self.weight.copy_(w.to(self.weight.device))

    def current_lam(self) -> float:
        """The temperature of the current epoch (``first_stage_lam`` before ``start_epoch``)."""
        return self.lam if self.epoch >= self.start_epoch else self.first_stage_lam

    def is_plain(self) -> bool:
        """Whether the current epoch uses the plain mean loss (temperature ``inf`` or over the threshold)."""
        lam = self.current_lam()
        return (math.isinf(lam) and lam > 0) or (self.plain_lambda_threshold is not None and lam >= self.plain_lambda_threshold)

    @property
    def u(self) -> Tensor:
        """The normaliser :math:`u` (``exp`` of the stored :math:`\\log u`)."""
        return self.log_u.exp()

    def reset_state(self) -> None:
        """Forget the normaliser (:math:`u = 0`)."""
        self.log_u.fill_(-math.inf)

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    # ----------------------------------------------------------------- forward
    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        r"""The weighted per-sample base losses :math:`\ell_i = w_{y_i}\,\mathrm{base}_i`."""
        check_logits_target(logits, target)
        x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        loss = self.base(x, target)
        if not isinstance(loss, Tensor) or loss.shape != (x.shape[0],):
            raise ValueError(f"base must return per-sample losses of shape ({x.shape[0]},); got {describe(loss)}")
        if self.weight is not None:
            loss = loss * self.weight.to(device=loss.device, dtype=loss.dtype)[target]
        return loss

    def _batch_stat(self, scores: Tensor) -> Tensor | None:
        """The global log-mean-exp (or mean-exp) of the scores over all ranks, or None when local."""
        if self.sync != "global" or not _distributed():
            return None
        n_local = torch.tensor(float(scores.numel()), dtype=scores.dtype, device=scores.device)
        if self.stable:
            local = torch.stack([torch.logsumexp(scores, 0), n_local])
        else:
            local = torch.stack([scores.exp().sum(), n_local])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        stats = torch.stack(parts)
        n = stats[:, 1].sum().clamp(min=1)
        if self.stable:
            return torch.logsumexp(stats[:, 0], 0) - n.log()
        return stats[:, 0].sum() / n

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The ABSGD loss of the batch; updates :math:`u` (except in the plain stage).

        Under ``torch.compile`` the plain expression runs, with :math:`u` a buffer updated in the graph.
        """
        if self.training and not self.is_plain() and not compiling() and self._fused():
            check_logits_target(logits, target)
            x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            labels = target if target.dtype == torch.int64 else target.long()
            return _WeightedCrossEntropy.apply(x, labels, self._weigh)
        loss = self.per_sample_loss(logits, target)
        if not self.training:  # evaluation: no state update, no collective; report the plain mean
            return loss.mean()
        if self.is_plain():
            self.last_weights = None
            return loss.mean()
        return (self._weigh(loss) * loss).sum()

    def _weigh(self, loss: Tensor) -> Tensor:
        """The detached weights :math:`p` of the per-sample losses ``loss``; updates :math:`u`."""
        lam = self.current_lam()
        with torch.no_grad():
            scores = loss.detach() / lam
            stat = self._batch_stat(scores)
            on_host = scores.is_cpu and scores.dtype in (torch.float32, torch.float64) and not compiling()
            if self.stable and stat is None and on_host:
                return self._weigh_on_host(scores)
            log_u_prev = self.log_u.to(loss.device)
            if self.u_init == "first_batch":  # u_0 = alpha * mean(e) instead of 0 (no host sync)
                if stat is None:
                    log_mean = torch.logsumexp(scores, 0) - math.log(max(scores.numel(), 1))
                else:
                    log_mean = stat if self.stable else stat.log()
                first = (log_mean + math.log(self.alpha)).to(log_u_prev)
                log_u_prev = torch.where(torch.isneginf(log_u_prev), first, log_u_prev)
            if self.stable:
                p, log_u = absgd_weights(loss, log_u_prev.to(loss.dtype), lam, self.gamma, self.alpha, True, batch_stat=stat)
            else:
                u_prev = log_u_prev.exp().to(loss.dtype)
                p, u = absgd_weights(loss, u_prev, lam, self.gamma, self.alpha, False, batch_stat=stat)
                log_u = u.to(torch.float64).log()
            self.log_u.copy_(log_u.to(self.log_u))
            self.last_weights = p
        return p

    def _weigh_on_host(self, scores: Tensor) -> Tensor:
        r""":meth:`_weigh` in log space for CPU scores of this batch only: the normaliser is a number.

        :math:`\log u_t = \operatorname{logaddexp}(\log u_{t-1} + \log(1-\gamma),\
        \log\mathrm{mean}_j e^{s_j} + \log(\gamma\alpha))` in double precision from one reduction
        of the scores (one log-sum-exp read as a number), then :math:`p = e^{s - \log u_t - \log B}`
        in place: :func:`absgd_weights` with fewer operations on small tensors.
        """
        n = max(scores.numel(), 1)
        log_mean = float(torch.logsumexp(scores, 0)) - math.log(n)
        log_u_prev = float(self.log_u)
        if self.u_init == "first_batch" and log_u_prev == -math.inf:
            log_u_prev = log_mean + math.log(self.alpha)
        decayed = log_u_prev + (math.log1p(-self.gamma) if self.gamma < 1 else -math.inf)
        fresh = log_mean + math.log(self.gamma * self.alpha)
        top = max(decayed, fresh)
        if top == -math.inf or math.isnan(top):
            log_u = top if math.isnan(top) else -math.inf
        else:
            log_u = top + math.log(math.exp(decayed - top) + math.exp(fresh - top))
        p = scores.sub_(log_u + math.log(n)).exp_()
        self.log_u.fill_(log_u)
        self.last_weights = p
        return p

    def _fused(self) -> bool:
        """Whether the batch runs :class:`_WeightedCrossEntropy`: the default cross-entropy base, still
        without class weights or smoothing, and class weights all one."""
        if not self._ce_base:
            return False
        base = self.base
        if getattr(base, "weight", None) is not None or getattr(base, "label_smoothing", 0.0) != 0.0:
            return False
        w = self.weight
        if w is None:
            return True
        if w.is_inference():  # no version counter to key a cached answer on
            return bool((w == 1).all())
        key = (id(w), w._version, w.device)
        cached = self._unit_weight_key
        if cached is None or cached[0] != key:
            cached = self._unit_weight_key = (key, bool((w == 1).all()))
        return cached[1]

    def extra_repr(self) -> str:
        return (
            f"lam={self.lam}, gamma={self.gamma}, alpha={self.alpha}, stable={self.stable}, "
            f"start_epoch={self.start_epoch}, sync={self.sync!r}"
        )


class ABSGD(torch.optim.SGD):
    """The ABSGD optimiser: momentum SGD (momentum 0.9) stepping on :class:`ABSGDLoss`.

    The official ``absgd.optimizers.ABSGD`` is ``torch.optim.SGD`` with momentum 0.9; the attentional
    weighting lives entirely in the loss (:class:`ABSGDLoss`). Recipe (README, CIFAR): lr 0.1,
    weight decay 2e-4.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: momentum (official 0.9).
        weight_decay: L2 penalty (the CIFAR recipe uses 2e-4 on all parameters).
        nesterov: Nesterov momentum (official: off).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


class _WeightedCrossEntropy(torch.autograd.Function):
    r""":math:`\sum_i p_i\,\mathrm{CE}_i` with the detached weights :math:`p = \texttt{weigh}(\mathrm{CE})`.

    ABSGD's objective with the cross-entropy base in one function: the forward computes the per-sample
    cross-entropies from one log-softmax (transposed for float32 CPU logits with fewer than 16 classes,
    see :mod:`tailwise.functional._fused`), hands them to ``weigh`` (which returns :math:`p` and
    updates the loss's state), and returns their weighted sum; the backward is
    :math:`g\,p_i(\operatorname{softmax}(z_i) - e_{y_i})`, without autograd's graph of the
    composition.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, weigh: Callable[[Tensor], Tensor]
    ) -> Tensor:
        transposed = _transposed(z)
        if transposed:
            log_p = torch.log_softmax(z.t(), 0)
            ce = log_p.gather(0, target.unsqueeze(0)).squeeze(0).neg_()
        else:
            log_p = torch.log_softmax(z, 1)
            ce = log_p.gather(1, target.unsqueeze(1)).squeeze(1).neg_()
        p = weigh(ce).to(ce.dtype)
        ctx.save_for_backward(z, target, log_p, p)
        ctx.transposed = transposed
        return torch.dot(p, ce)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target, log_p, p = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            ce = F.cross_entropy(z, target, reduction="none")
            (grad_z,) = torch.autograd.grad(torch.dot(p, ce), z, grad, create_graph=True)
            return grad_z, None, None
        coef = p * grad
        if ctx.transposed:
            row = coef.unsqueeze(0)
            grad_t = log_p.exp().mul_(row)
            grad_t.scatter_add_(0, target.unsqueeze(0), row.neg())
            return grad_t.t(), None, None
        col = coef.unsqueeze(1)
        grad_z = log_p.exp().mul_(col)
        grad_z.scatter_add_(1, target.unsqueeze(1), col.neg())
        return grad_z, None, None
