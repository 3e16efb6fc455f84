"""l_p-distance layers: the building blocks of l_inf-distance nets (Zhang et al., ICML 2021 / ICLR 2022).

Bohang Zhang, Tianle Cai, Zhou Lu, Di He, Liwei Wang, "Towards Certifying l-infinity Robustness using
Neural Networks with l-inf-dist Neurons", ICML 2021; Bohang Zhang, Du Jiang, Di He, Liwei Wang,
"Boosting the Certified Robustness of L-infinity Distance Nets", ICLR 2022.

An l_p-distance neuron with weight ``w_j ∈ R^{CI}`` outputs ``u_j(x) = ‖x − w_j‖_p``; for ``p = ∞``,
``u_j(x) = max_i |x_i − w_{ji}|``, which is 1-Lipschitz with respect to ``‖·‖_∞``. Inputs are laid out as
``(B, CI, HW)``, weights as ``(CO, CI/groups)``; with ``groups = G`` the channels are split into ``G``
contiguous blocks and output block ``g`` reads input block ``g``.

Implementation (pure PyTorch, any device):

* ``p = ∞``: a custom autograd function computes the forward in chunks over output channels (bounding
  the transient ``(B, chunk, CI/G, HW)`` difference tensor: 2^16 elements on the CPU, so that each chunk's
  difference, absolute value and maximum stay in cache, 2^24 elsewhere to keep kernel launches few; see
  :func:`set_lp_dist_chunk_elements`) and saves only the argmax indices
  ``(B, CO, HW)``; the backward scatters ``± grad`` to the argmax input/weight entries. Memory kept for
  backward is ``O(B·CO·HW)`` plus the inputs, not ``O(B·CO·CI·HW)``.
* finite ``p ≥ 1``: ``u = M·‖(x − w)/M‖_p`` with ``M = max_i |x_i − w_i|`` treated as a constant, which
  cannot overflow at ``p = 1000``; the backward recomputes each chunk and uses
  ``∂u/∂x_i = sign(x_i − w_i)·(|x_i − w_i|/u)^{p−1}`` (bounded by 1).
* When ``x = w`` exactly, the official fallback returns NaN (``0/0``); here the distance is 0 with a zero
  gradient.

Also: interval bounds of the distance over an input box (:func:`interval_lp_distance`,
:func:`bound_inf_dist`), :class:`MeanShift` normalisation, and the layers :class:`LpDistLinear` and
:class:`LpDistConv2d` (the official ``NormDist`` / ``NormDistConv``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tailwise._validation import describe

__all__ = [
    "LpDistConv2d",
    "LpDistLinear",
    "MeanShift",
    "bound_inf_dist",
    "interval_lp_distance",
    "lp_distance",
    "set_lp_dist_chunk_elements",
]

_CPU_CHUNK_ELEMENTS = 1 << 16  # 256 KiB of float32: the chunk's temporaries stay in the L2 cache
_DEVICE_CHUNK_ELEMENTS = 1 << 24  # accelerators: few, large kernels
_CHUNK_ELEMENTS: int | None = None  # None: the per-device defaults above


def set_lp_dist_chunk_elements(n: int | None) -> int | None:
    """Set the element budget of one chunk's ``(B, chunk, CI/G, HW)`` difference tensor.

    Args:
        n: a positive number of elements for every device, or ``None`` for the defaults (``2**16`` on
            the CPU, where smaller chunks stay in cache and run about twice as fast as one large
            difference tensor; ``2**24`` on other devices).

    Returns:
        The previous setting (``None`` for the defaults).
    """
    global _CHUNK_ELEMENTS
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None; got {n!r}")
    old, _CHUNK_ELEMENTS = _CHUNK_ELEMENTS, n
    return old


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number >= 1 or float('inf'); got {describe(p)}")
    p = float(p)
    if math.isnan(p) or p < 1:
        raise ValueError(f"p must be >= 1 or float('inf'); got {p}")
    return p


def _check_xw(x: Tensor, w: Tensor, groups: int, xname: str = "x") -> tuple[int, int, int, int, int]:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{xname} must be a floating-point torch.Tensor; got {describe(x)}")
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point torch.Tensor; got {describe(w)}")
    if x.ndim != 3:
        raise ValueError(f"{xname} must have shape (B, CI, HW); got shape {tuple(x.shape)}")
    if w.ndim != 2:
        raise ValueError(f"w must have shape (CO, CI/groups); got shape {tuple(w.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    b, ci, hw = x.shape
    co, cig = w.shape
    if ci != cig * groups:
        raise ValueError(
            f"{xname} must have CI = groups·w.shape[1] = {groups}·{cig} = {groups * cig} channels; got CI = {ci}"
        )
    if co % groups != 0:
        raise ValueError(f"w must have a number of output channels divisible by groups={groups}; got CO = {co}")
    return b, ci, hw, co, cig


def _chunk(b: int, cig: int, hw: int, cog: int, device: torch.device) -> int:
    budget = _CHUNK_ELEMENTS
    if budget is None:
        budget = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _DEVICE_CHUNK_ELEMENTS
    return max(1, min(cog, budget // max(1, b * cig * hw)))


def _blocks(groups: int, cog: int, chunk: int) -> list[tuple[int, int, int]]:
    """(group, first output, end output) for every chunk."""
    out = []
    for g in range(groups):
        for s in range(0, cog, chunk):
            out.append((g, g * cog + s, g * cog + min(cog, s + chunk)))
    return out


class _InfDist(torch.autograd.Function):
    """``y[b, o, s] = max_i |x[b, g(o)·CIg + i, s] − w[o, i]|`` saving only the argmax indices."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, groups: int) -> Tensor:  # type: ignore[override]
        b, _, hw = x.shape
        co, cig = w.shape
        cog = co // groups
        y = x.new_empty((b, co, hw))
        idx = torch.empty((b, co, hw), dtype=torch.int64, device=x.device)
        for g, o0, o1 in _blocks(groups, cog, _chunk(b, cig, hw, cog, x.device)):
            xg = x[:, g * cig : (g + 1) * cig].unsqueeze(1)
            d = (xg - w[o0:o1].unsqueeze(-1)).abs_()
            v, i = d.max(dim=2)
            y[:, o0:o1] = v
            idx[:, o0:o1] = i
        ctx.groups = groups
        ctx.save_for_backward(x, w, idx)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, w, idx = ctx.saved_tensors
        groups = ctx.groups
        b, _, hw = x.shape
        co, cig = w.shape
        cog = co // groups
        offset = (torch.arange(co, device=x.device) // cog * cig).view(1, co, 1)
        in_ch = idx + offset
        xv = x.gather(1, in_ch)
        wv = w.gather(1, idx.permute(1, 0, 2).reshape(co, b * hw)).view(co, b, hw).permute(1, 0, 2)
        s = torch.sign(xv - wv) * grad_y
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(x).scatter_add_(1, in_ch, s)
        if ctx.needs_input_grad[1]:
            flat = (torch.arange(co, device=x.device).view(1, co, 1) * cig + idx).reshape(-1)
            grad_w = torch.zeros(co * cig, dtype=w.dtype, device=w.device).scatter_add_(0, flat, s.reshape(-1).to(w.dtype))
            grad_w = grad_w.view(co, cig).neg_()
        return grad_x, grad_w, None


def _rescaled_norm(a: Tensor, p: float, dim: int) -> Tensor:
    """``M·(Σ (a/M)^p)^{1/p}`` with ``M = max a`` (``a ≥ 0``); 0 where ``M = 0``."""
    m = a.amax(dim, keepdim=True)
    safe = m.clamp_min(torch.finfo(a.dtype).tiny)
    return (a / safe).pow(p).sum(dim).pow(1.0 / p) * m.squeeze(dim)


class _LpDist(torch.autograd.Function):
    """Finite-p distance with max-rescaling; the backward recomputes each chunk."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, p: float, groups: int) -> Tensor:  # type: ignore[override]
        b, _, hw = x.shape
        co, cig = w.shape
        cog = co // groups
        y = x.new_empty((b, co, hw))
        for g, o0, o1 in _blocks(groups, cog, _chunk(b, cig, hw, cog, x.device)):
            xg = x[:, g * cig : (g + 1) * cig].unsqueeze(1)
            d = (xg - w[o0:o1].unsqueeze(-1)).abs_()
            y[:, o0:o1] = _rescaled_norm(d, p, 2)
        ctx.p = p
        ctx.groups = groups
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        x, w, y = ctx.saved_tensors
        p, groups = ctx.p, ctx.groups
        b, _, hw = x.shape
        co, cig = w.shape
        cog = co // groups
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.zeros_like(w) if need_w else None
        y_safe = y.clamp_min(torch.finfo(y.dtype).tiny)
        for g, o0, o1 in _blocks(groups, cog, _chunk(b, cig, hw, cog, x.device)):
            xg = x[:, g * cig : (g + 1) * cig].unsqueeze(1)
            d = xg - w[o0:o1].unsqueeze(-1)
            coef = (d.abs() / y_safe[:, o0:o1].unsqueeze(2)).pow(p - 1.0) * torch.sign(d)
            coef = coef * grad_y[:, o0:o1].unsqueeze(2)
            if grad_x is not None:
                grad_x[:, g * cig : (g + 1) * cig] += coef.sum(1)
            if grad_w is not None:
                grad_w[o0:o1] -= coef.sum((0, 3)).to(w.dtype)
        return grad_x, grad_w, None, None


def lp_distance(x: Tensor, w: Tensor, p: float = math.inf, groups: int = 1) -> Tensor:
    """Grouped l_p distances ``y[b, o, s] = ‖x[b, block(o), s] − w[o]‖_p``.

    Args:
        x: inputs ``(B, CI, HW)``.
        w: weights ``(CO, CI/groups)``.
        p: the norm, ``p ≥ 1`` or ``math.inf``.
        groups: number of channel groups ``G`` (``CI`` and ``CO`` divisible by ``G``).

    Returns:
        ``(B, CO, HW)`` distances in the promoted dtype of ``x`` and ``w``.
    """
    p = _check_p(p)
    _check_xw(x, w, groups)
    dtype = torch.promote_types(x.dtype, w.dtype)
    x, w = x.to(dtype), w.to(dtype)
    if math.isinf(p):
        return _InfDist.apply(x, w, groups)
    return _LpDist.apply(x, w, p, groups)


def interval_lp_distance(
    lower: Tensor, upper: Tensor, w: Tensor, p: float = math.inf, groups: int = 1
) -> tuple[Tensor, Tensor]:
    """Exact bounds of ``‖x − w_o‖_p`` over the box ``lower ≤ x ≤ upper`` (interval bound propagation).

    Per coordinate, ``|x_i − w_i|`` ranges over ``[dist(w_i, [l_i, u_i]), max(w_i − l_i, u_i − w_i)]``
    and the norm is monotone in every ``|x_i − w_i|``, so

    .. math::

        \\underline{y} = \\lVert \\max(l - w,\\, w - u,\\, 0) \\rVert_p, \\qquad
        \\overline{y} = \\lVert \\max(w - l,\\, u - w) \\rVert_p .

    For ``p = ∞`` this is the official ``bound_inf_dist``. Differentiable by autograd (chunked values;
    the backward keeps each chunk's tensors, so use it under ``torch.no_grad()`` for large layers).

    Args:
        lower: box lower corner ``(B, CI, HW)``.
        upper: box upper corner ``(B, CI, HW)``, ``upper ≥ lower``.
        w: weights ``(CO, CI/groups)``.
        p: the norm.
        groups: channel groups.

    Returns:
        ``(y_lower, y_upper)``, each ``(B, CO, HW)``.
    """
    p = _check_p(p)
    b, _, hw, co, cig = _check_xw(lower, w, groups, xname="lower")
    if not isinstance(upper, Tensor) or upper.shape != lower.shape:
        raise ValueError(f"upper must have the shape of lower {tuple(lower.shape)}; got {describe(upper)}")
    cog = co // groups
    outs_lo: list[Tensor] = []
    outs_up: list[Tensor] = []
    for g, o0, o1 in _blocks(groups, cog, _chunk(b, cig, hw, cog, lower.device)):
        lo = lower[:, g * cig : (g + 1) * cig].unsqueeze(1)
        up = upper[:, g * cig : (g + 1) * cig].unsqueeze(1)
        wc = w[o0:o1].unsqueeze(-1)
        d_up = torch.maximum(wc - lo, up - wc)
        d_lo = torch.maximum(lo - wc, wc - up).clamp_min(0.0)
        if math.isinf(p):
            outs_up.append(d_up.amax(2))
            outs_lo.append(d_lo.amax(2))
        else:
            outs_up.append(_rescaled_norm(d_up, p, 2))
            outs_lo.append(_rescaled_norm(d_lo, p, 2))
    return torch.cat(outs_lo, 1), torch.cat(outs_up, 1)


def bound_inf_dist(lower: Tensor, upper: Tensor, w: Tensor, groups: int = 1) -> tuple[Tensor, Tensor]:
    """Interval bounds of the l_inf distance over a box: :func:`interval_lp_distance` at ``p = ∞``.

    ``y_upper = max_i max(w_i − l_i, u_i − w_i)``, ``y_lower = max_i dist(w_i, [l_i, u_i])``.
    """
    return interval_lp_distance(lower, upper, w, math.inf, groups)


class MeanShift(nn.Module):
    """Mean-shift normalisation of l_p-distance outputs (batch norm without the variance division).

    Training: ``y ← y − mean_{batch, spatial}(y)`` and ``running_mean ← (1 − m)·running_mean + m·mean``;
    eval: ``y ← y − running_mean``. Without a variance division each unit stays 1-Lipschitz in l_inf.
    Interval bounds are shifted by the same amount as ``y``.

    Args:
        num_features: number of channels.
        momentum: running-average momentum ``m`` (0.1 as in the official code).
    """

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1]; got {momentum!r}")
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.register_buffer("running_mean", torch.zeros(self.num_features))

    def forward(
        self, y: Tensor, lower: Tensor | None = None, upper: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Shift ``y`` ``(B, C, HW)`` and optional bounds; returns ``(y, lower, upper)``."""
        if y.ndim != 3 or y.shape[1] != self.num_features:
            raise ValueError(f"y must have shape (B, {self.num_features}, HW); got shape {tuple(y.shape)}")
        if self.training:
            mean = y.mean(dim=(0, 2))
            with torch.no_grad():
                self.running_mean.mul_(1.0 - self.momentum).add_(mean.detach().to(self.running_mean.dtype), alpha=self.momentum)
        else:
            mean = self.running_mean.to(y.dtype)
        shift = mean.view(1, -1, 1)
        return (
            y - shift,
            None if lower is None else lower - shift,
            None if upper is None else upper - shift,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"


class _LpDistBase(nn.Module):
    """Shared parts of the l_p-distance layers: weight, optional bias and mean-shift, identity init, ``p``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        mean_shift: bool,
        identity_val: float | None,
        p: float,
        groups: int,
        kernel_numel: int,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive integer; got {groups!r}")
        if in_features % groups or out_features % groups:
            raise ValueError(
                f"in_features ({in_features}) and out_features ({out_features}) must be divisible by groups={groups}"
            )
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.groups = groups
        self.p = _check_p(p)
        self.identity_val = identity_val
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups * kernel_numel))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.mean_shift = MeanShift(out_features) if mean_shift else None
        self.reset_parameters(generator)

    def _identity_positions(self) -> tuple[int, int]:
        return 1, 0  # (kernel numel, index of the centre inside the kernel)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``w ~ N(0, 1)``; with ``identity_val`` and ``in ≤ out``, ``w[i, i mod in] = −identity_val``
        (at the kernel centre for convolutions); bias zero."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0, generator=generator)
            cin = self.in_features // self.groups
            if self.identity_val is not None and self.in_features <= self.out_features:
                k, centre = self._identity_positions()
                for i in range(self.out_features):
                    self.weight[i, (i % cin) * k + centre] = -float(self.identity_val)
            if self.bias is not None:
                self.bias.zero_()

    def set_p(self, p: float) -> None:
        """Set the norm ``p`` (``≥ 1`` or ``math.inf``)."""
        self.p = _check_p(p)

    def _dist(
        self, cols: Tensor, lower: Tensor | None, upper: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        y = lp_distance(cols, self.weight, self.p, self.groups)
        lo = up = None
        if lower is not None or upper is not None:
            if lower is None or upper is None:
                raise ValueError("lower and upper must be given together")
            if not math.isinf(self.p):
                raise ValueError(f"interval bounds need p = inf (the layer is 1-Lipschitz only then); got p = {self.p}")
            lo, up = bound_inf_dist(lower, upper, self.weight, self.groups)
        if self.mean_shift is not None:
            y, lo, up = self.mean_shift(y, lo, up)
        if self.bias is not None:
            bias = self.bias.view(1, -1, 1)
            y = y + bias
            lo = None if lo is None else lo + bias
            up = None if up is None else up + bias
        return y, lo, up

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, p={self.p}, groups={self.groups}, "
            f"bias={self.bias is not None}, mean_shift={self.mean_shift is not None}, identity_val={self.identity_val}"
        )


class LpDistLinear(_LpDistBase):
    """Fully connected l_p-distance layer ``y_j = ‖x − w_j‖_p (− mean shift) (+ b_j)`` (official ``NormDist``).

    Accepts ``(B, in)`` (returns ``(B, out)``) or ``(B, in, L)`` (returns ``(B, out, L)``). Called with
    ``lower``/``upper`` (same shape as ``x``) it also propagates interval bounds (``p = ∞`` only) and
    returns ``(y, y_lower, y_upper)``.

    Args:
        in_features: input size.
        out_features: number of neurons.
        bias: add a learnable bias (official: last layer only).
        mean_shift: apply :class:`MeanShift` (official: all but the last layer).
        identity_val: identity initialisation value (``None``: off).
        p: the norm.
        groups: channel groups.
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        mean_shift: bool = True,
        identity_val: float | None = None,
        p: float = math.inf,
        groups: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, mean_shift, identity_val, p, groups, 1, generator)

    def forward(
        self, x: Tensor, lower: Tensor | None = None, upper: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor | None, Tensor | None]:
        if not isinstance(x, Tensor) or x.ndim not in (2, 3) or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (B, {self.in_features}) or (B, {self.in_features}, L); got {describe(x)}")
        flat = x.ndim == 2
        if flat:
            x = x.unsqueeze(-1)
            lower = None if lower is None else lower.unsqueeze(-1)
            upper = None if upper is None else upper.unsqueeze(-1)
        y, lo, up = self._dist(x, lower, upper)
        if flat:
            y = y.squeeze(-1)
            lo = None if lo is None else lo.squeeze(-1)
            up = None if up is None else up.squeeze(-1)
        if lo is None and up is None:
            return y
        return y, lo, up


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair of ints; got {v!r}")
    return t  # type: ignore[return-value]


class LpDistConv2d(_LpDistBase):
    """Convolutional l_p-distance layer (official ``NormDistConv``), via ``F.unfold``.

    Each output position is ``‖patch − w_o‖_p`` over the ``(C/groups)·k·k`` patch in ``F.unfold`` order
    (channel-major, then kernel row and column). Zero padding is part of the distance: padded zeros are
    compared with the weights. ``weight`` is stored flattened, ``(out, in/groups·k·k)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size, stride, padding, dilation: as in :class:`torch.nn.Conv2d`.
        bias, mean_shift, identity_val, p, groups, generator: as in :class:`LpDistLinear`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
        mean_shift: bool = True,
        identity_val: float | None = None,
        p: float = math.inf,
        groups: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        kh, kw = self.kernel_size
        super().__init__(in_channels, out_channels, bias, mean_shift, identity_val, p, groups, kh * kw, generator)

    def _identity_positions(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return kh * kw, (kh // 2) * kw + kw // 2

    def _unfold(self, x: Tensor) -> Tensor:
        return F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def forward(
        self, x: Tensor, lower: Tensor | None = None, upper: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor | None, Tensor | None]:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (B, {self.in_features}, H, W); got {describe(x)}")
        b, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        y, lo, up = self._dist(
            self._unfold(x),
            None if lower is None else self._unfold(lower),
            None if upper is None else self._unfold(upper),
        )
        shape = (b, self.out_features, ho, wo)
        if lo is None and up is None:
            return y.view(shape)
        return y.view(shape), None if lo is None else lo.view(shape), None if up is None else up.view(shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
