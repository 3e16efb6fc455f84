r"""LogitClip wrapper: clip the logit norm, then apply any loss (Wei et al., ICML 2023).

Hongxin Wei et al., "Mitigating Memorization of Noisy Labels by Clipping the Model Prediction",
ICML 2023 (arXiv 2212.04055). See :func:`tailwise.functional.clip_logits` for the two clipping rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._validation import (
    check_in_choices,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    checked_by_computation,
    describe,
)
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.logit_clip import LOGIT_CLIP_MODES, _check_logits, _check_p, _clip, clip_cross_entropy_fn
from tailwise.losses.ce import CrossEntropyLoss
from tailwise.registry import LOSSES

__all__ = ["LogitClipLoss", "build_logit_clip_loss"]

_FUSED_DTYPES = (torch.float32, torch.float64)


class LogitClipLoss(nn.Module):
    r"""Apply a loss to norm-clipped logits: :math:`L(\mathrm{clip}_{\tau,p}(z), y)`.

    Works with every loss called as ``base_loss(logits, target, ...)``: a tailwise loss module, an
    ``nn.CrossEntropyLoss`` or a plain function such as ``F.cross_entropy``. A module base is
    registered as a submodule, so its buffers (CALS multipliers, DRW weights) are saved with
    ``state_dict`` and moved with ``.to``. The trainer hooks ``set_epoch``, ``set_weight`` and
    ``update_from_validation`` are forwarded to the base when it has them; the validation logits
    are clipped first, so a stateful base sees the same kind of logits it is trained on.

    The official LogitClip code always uses cross-entropy on the clipped logits
    (``mode="official"``, ``base_loss=nn.CrossEntropyLoss()``).

    When the base is tailwise's :class:`~tailwise.losses.CrossEntropyLoss` without label smoothing
    (the registry default ``base="ce"``), float32/float64 logits with class-index targets are clipped
    and scored in one fused kernel with the analytic gradient (same value and gradient up to
    rounding, same argument checks and errors; its functional twin is
    :func:`tailwise.functional.logit_clip_loss`); other bases get the clipped logits.

    Args:
        base_loss: the loss applied to the clipped logits (module or callable).
        tau: temperature :math:`\tau > 0`; the norm bound is :math:`1/\tau` (official default 1.0).
        p: norm order, ``>= 1`` or ``math.inf`` (default 2).
        mode: ``"continuous"`` (the paper's clamp, default) or ``"official"`` (the released code's
            threshold :math:`\tau` / target :math:`1/\tau` rule).
    """

    def __init__(
        self,
        base_loss: nn.Module | Callable[..., Tensor],
        tau: float = 1.0,
        p: float = 2,
        mode: str = "continuous",
    ) -> None:
        super().__init__()
        if not callable(base_loss):
            raise TypeError(f"base_loss must be an nn.Module or a callable loss(logits, target); got {describe(base_loss)}")
        self.tau = tau
        self.p = p
        self.mode = mode
        if isinstance(base_loss, nn.Module):
            self.base_loss: nn.Module | Callable[..., Tensor] = base_loss
        else:
            self._base_fn = base_loss
        self._prepared = PreparedLosses(maxsize=1)  # the prepared fused cross-entropy (see _fused_cross_entropy_fn)

    @property
    def base(self) -> nn.Module | Callable[..., Tensor]:
        """The wrapped loss."""
        return self._modules["base_loss"] if "base_loss" in self._modules else self.__dict__["_base_fn"]

    @property
    def tau(self) -> float:
        r"""The temperature :math:`\tau > 0` (checked when set)."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        self._tau = check_positive("tau", value)

    @property
    def p(self) -> float:
        """The norm order, ``>= 1`` or ``math.inf`` (checked when set)."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = _check_p(value)

    @property
    def mode(self) -> str:
        """``"continuous"`` or ``"official"`` (checked when set)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = check_in_choices("mode", value, LOGIT_CLIP_MODES)

    def clip(self, logits: Tensor) -> Tensor:
        """The clipped logits fed to the base loss: :func:`tailwise.functional.clip_logits` with this module's settings."""
        _check_logits(logits)
        return _clip(logits, self._tau, self._p, self._mode)

    def forward(self, logits: Tensor, target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``base_loss(clip(logits), target, *args, **kwargs)``."""
        if not args and not kwargs:
            fn = self._fused_cross_entropy_fn(logits, target)
            if fn is not None:
                labels = target if target.dtype == torch.int64 else target.long()
                if logits.is_cpu:  # the logits' finiteness checked by the loss (see below)
                    return checked_by_computation(fn, logits, labels, logits)
                return fn(logits, labels)
        return self.base(self.clip(logits), target, *args, **kwargs)

    def _fused_cross_entropy_fn(self, logits: Tensor, target: Tensor) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The prepared fused clip + cross-entropy when the base and the inputs allow it, else ``None``.

        The checks are the base's, applied to the unclipped logits: clipping maps finite rows to
        finite rows and non-finite rows to non-finite rows, so they pass or fail together. On a
        failure this returns ``None`` and the composed path raises the base loss's own error. On the
        CPU the finiteness of the logits is left to the loss: a row with NaN or Inf makes its loss
        NaN, and only a non-finite loss leads to the scan that raises the base's message (see
        :func:`tailwise._validation.checked_by_computation`). The
        checked weight and the prepared function are kept while the base, its weight and this
        module's settings are unchanged (see :mod:`tailwise.functional._prepared`).
        """
        base = self._modules.get("base_loss")
        if type(base) is not CrossEntropyLoss or base.label_smoothing != 0.0:
            return None
        try:  # also checks that logits is a floating-point (N, C) tensor
            if check_logits_target(logits, target, allow_soft=True, finite=not logits.is_cpu):
                return None  # soft targets
        except (TypeError, ValueError):
            return None
        dtype, c = logits.dtype, logits.shape[1]
        if dtype not in _FUSED_DTYPES or c == 0:
            return None
        weight, reduction = base._buffers.get("weight"), base.reduction
        key = PreparedLosses.key("logit_clip", logits, weight, reduction, self._tau, self._p, self._mode)
        fn = self._prepared.get(key)
        if fn is None:
            reduction = check_reduction(reduction)
            w = None if weight is None else check_weight(weight, c).to(device=logits.device, dtype=dtype)
            fn = clip_cross_entropy_fn(logits, self._tau, self._p, self._mode, w, reduction)
            if fn is not None:
                self._prepared.put(key, fn, (weight,))
        return fn

    # Trainer hooks, forwarded to the base loss when it has them.
    def set_epoch(self, epoch: int) -> None:
        """Forward ``set_epoch`` to the base loss (no-op when it has none)."""
        fn = getattr(self.base, "set_epoch", None)
        if fn is not None:
            fn(epoch)

    def set_weight(self, weight: Tensor | None) -> None:
        """Forward ``set_weight`` to the base loss.

        Raises:
            TypeError: the base loss has no ``set_weight``.
        """
        fn = getattr(self.base, "set_weight", None)
        if fn is None:
            raise TypeError(f"base_loss {type(self.base).__name__} has no set_weight; it does not take class weights")
        fn(weight)

    def update_from_validation(self, logits: Tensor, target: Tensor, epoch: int) -> None:
        """Forward the clipped validation logits to the base loss's ``update_from_validation``."""
        fn = getattr(self.base, "update_from_validation", None)
        if fn is not None:
            fn(self.clip(logits), target, epoch)

    def extra_repr(self) -> str:
        base = "" if isinstance(self.base, nn.Module) else f", base_loss={getattr(self.base, '__name__', self.base)!r}"
        return f"tau={self.tau}, p={self.p}, mode={self.mode!r}{base}"


@LOSSES.register("logit_clip", "logitclip")
def build_logit_clip_loss(
    base: str = "ce",
    base_params: Mapping[str, Any] | None = None,
    tau: float = 1.0,
    p: float = 2,
    mode: str = "continuous",
    class_counts: Sequence[float] | Tensor | None = None,
    num_classes: int | None = None,
) -> LogitClipLoss:
    """Registry factory: a :class:`LogitClipLoss` around the loss registered as ``base``.

    The base is built with ``LOSSES.build(base, base_params, class_counts=..., num_classes=...)``,
    so any registered loss (``ce``, ``ldam``, ``vs``, ``focal``, ``alpha``, ...) can be wrapped and
    receives the trainer's context. Context values that are ``None`` are not forwarded.

    Args:
        base: registered name of the wrapped loss.
        base_params: keyword arguments of the wrapped loss.
        tau: temperature; the norm bound is ``1/tau``.
        p: norm order.
        mode: ``"continuous"`` or ``"official"``.
        class_counts: trainer context, forwarded to the base when it takes it.
        num_classes: trainer context, forwarded to the base when it takes it.
    """
    if base in ("logit_clip", "logitclip"):
        raise ValueError(f"base must name another loss than logit_clip; got {base!r}")
    context = {k: v for k, v in {"class_counts": class_counts, "num_classes": num_classes}.items() if v is not None}
    base_loss = LOSSES.build(base, dict(base_params or {}), **context)
    return LogitClipLoss(base_loss, tau=tau, p=p, mode=mode)
