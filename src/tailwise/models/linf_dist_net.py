"""l_inf-distance net (MLP form), v1 and v2 (Zhang et al., ICML 2021; Zhang, Jiang, He, Wang, ICLR 2022).

The network stacks l_p-distance layers (:class:`tailwise.layers.LpDistLinear`):
``LpDist(in → width)`` with mean shift, ``depth − 2`` × ``LpDist(width → width)`` with mean shift, and
``LpDist(width → C)`` with bias and no mean shift. With ``u_L`` the last layer's output, the network
outputs ``z = −u_L`` and the logits ``g(x) = s·z`` with a learnable scalar ``s`` (``scalar=True``).

At ``p = ∞`` every layer is 1-Lipschitz in ``‖·‖_∞``, so ``|z_j(x') − z_j(x)| ≤ ε`` on the ε-ball. Given
labels and ``ε > 0`` the forward also returns the *worst-case margin* tensor

.. math::

    \\mathrm{worst}_{bj} = \\frac{\\overline{z}_{bj} - \\underline{z}_{b y_b}}{2\\varepsilon}\\;(j \\neq y_b),
    \\qquad \\mathrm{worst}_{b y_b} = 0,

where ``[z̲, z̄]`` are interval bounds of ``z`` over the input box ``[max(x − ε, lower), min(x + ε, upper)]``
(interval bound propagation, when ``lower``/``upper`` are given and all layers are at ``p = ∞``) or the
Lipschitz bounds ``z ± ε`` otherwise (the scalar ``s`` is not applied). The point is certified iff all
``worst_{bj} < 0`` for ``j ≠ y``. The v2 objective is :class:`tailwise.losses.LinfMixtureLoss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tailwise._validation import check_positive, describe
from tailwise.layers.lp_dist import LpDistLinear
from tailwise.registry import MODELS

__all__ = ["LinfDistMLP", "worst_case_margin"]


def worst_case_margin(z_lower: Tensor, z_upper: Tensor, targets: Tensor, eps: float) -> Tensor:
    """``worst[b, j] = (z̄[b, j] − z̲[b, y_b])/(2ε)`` for ``j ≠ y_b`` and 0 at the label.

    Args:
        z_lower: lower bounds of the outputs ``(B, C)``.
        z_upper: upper bounds of the outputs ``(B, C)``.
        targets: labels ``(B,)``.
        eps: the perturbation radius ``ε > 0`` used for normalisation.
    """
    eps = check_positive("eps", eps)
    if z_lower.shape != z_upper.shape or z_lower.ndim != 2:
        raise ValueError(f"z_lower and z_upper must both have shape (B, C); got {describe(z_lower)} and {describe(z_upper)}")
    if not isinstance(targets, Tensor) or targets.shape != (z_lower.shape[0],):
        raise ValueError(f"targets must have shape ({z_lower.shape[0]},); got {describe(targets)}")
    t = targets.long().view(-1, 1)
    margin = z_upper - z_lower.gather(1, t)
    margin = margin.scatter(1, t, 0.0)
    return margin / (2.0 * eps)


@MODELS.register("linf_dist_mlp")
class LinfDistMLP(nn.Module):
    """The l_inf-distance MLP of Zhang et al. (official ``MLPModel``).

    Parameter and buffer names follow the official model (``fc_dist.{i}.weight``, ``fc_dist.{L-1}.bias``,
    ``fc_dist.{i}.mean_shift.running_mean``, ``scalar``), so official state dicts load directly.

    Registry defaults (``MODELS.build("linf_dist_mlp", ...)``, the trainer's ``model: {name: linf_dist_mlp}``):
    depth 5 (the official MNIST depth; CIFAR-10 uses 6) and width 1024, a CPU-trainable size. The
    official v2 commands use width 5120 (set ``model.width=5120``). The trainer passes ``input_dim`` and
    ``num_classes`` from the data.

    The current norm ``p`` of every layer is part of the state dict (``_extra_state``), so a checkpoint
    taken while the ``p`` schedule runs is evaluated at the ``p`` it was trained with. State dicts
    without it (the official checkpoints) still load, with ``strict=True``; the layers then keep their
    current ``p``.

    Args:
        depth: number of l_p-distance layers (``≥ 2``).
        width: hidden width.
        input_dim: input size or shape (``[1, 28, 28]``); inputs are flattened.
        num_classes: number of classes.
        identity_val: identity initialisation value for layers with ``in ≤ out`` (``None``: off).
        scalar: learn the output scale ``s`` (initialised to 1); otherwise ``s = 1``.
        p: initial norm of every layer (training starts at 8 in v2, see
            :func:`tailwise.losses.linf_schedule`).
        mean_shift: use mean-shift normalisation in the hidden layers.
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        depth: int = 5,
        width: int = 1024,
        input_dim: int | Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        identity_val: float | None = 10.0,
        scalar: bool = True,
        p: float = math.inf,
        mean_shift: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2; got {depth!r}")
        for name, v in (("width", width), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        dims = [int(input_dim)] if isinstance(input_dim, int) else [int(d) for d in input_dim]
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"input_dim must be a positive int or a sequence of positive ints; got {input_dim!r}")
        self.input_shape = tuple(dims)
        in_features = math.prod(dims)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        sizes = [in_features] + [width] * (depth - 1)
        for i in range(depth - 1):
            layers.append(
                LpDistLinear(sizes[i], sizes[i + 1], bias=False, mean_shift=mean_shift, identity_val=identity_val, p=p, generator=generator)
            )
        layers.append(LpDistLinear(width, num_classes, bias=True, mean_shift=False, identity_val=identity_val, p=p, generator=generator))
        self.fc_dist = nn.ModuleList(layers)
        if scalar:
            self.scalar = nn.Parameter(torch.ones(1))
        else:
            self.register_parameter("scalar", None)

    def set_p(self, p: float) -> None:
        """Set the norm ``p`` of every layer."""
        for layer in self.fc_dist:
            layer.set_p(p)

    @property
    def p(self) -> float:
        """The norm of the first layer (all layers share it unless set individually)."""
        return self.fc_dist[0].p

    def get_extra_state(self) -> dict[str, list[float]]:
        return {"p": [float(layer.p) for layer in self.fc_dist]}

    def set_extra_state(self, state: dict[str, list[float]]) -> None:
        ps = list(state["p"])
        if len(ps) != len(self.fc_dist):
            raise ValueError(f"state holds p for {len(ps)} layers; the model has {len(self.fc_dist)}")
        for layer, p in zip(self.fc_dist, ps):
            layer.set_p(float(p))

    def _load_from_state_dict(  # type: ignore[override]
        self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        # state dicts without the per-layer p (official checkpoints, older tailwise ones) keep the current p
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict:
            missing_keys[before:] = [k for k in missing_keys[before:] if k != key]

    def _flatten(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor; got {describe(x)}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != math.prod(self.input_shape):
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.input_shape))}); got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1, 1)

    def _scale(self, z: Tensor) -> Tensor:
        return z if self.scalar is None else z * self.scalar

    def forward(
        self,
        x: Tensor,
        targets: Tensor | None = None,
        eps: float = 0.0,
        lower: float | Tensor | None = None,
        upper: float | Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits, and with ``targets`` and ``eps > 0`` the worst-case margin tensor.

        Args:
            x: inputs ``(B, *input_dim)`` (normalised as in training).
            targets: labels ``(B,)``; needed for the worst-case margin.
            eps: l_inf radius ``ε`` in the (normalised) input space.
            lower: lower end of the input domain (scalar or tensor broadcastable to ``x``), e.g. the
                normalised pixel value 0.
            upper: upper end of the input domain.

        Returns:
            ``logits`` ``(B, C)``, or ``(logits, worst)`` when ``targets`` is given and ``eps > 0``.
            ``worst`` uses interval bound propagation on the clipped box when both ``lower`` and
            ``upper`` are given and every layer is at ``p = ∞``, and the Lipschitz bounds ``z ± ε``
            otherwise.
        """
        eps = check_positive("eps", eps, allow_zero=True)
        h = self._flatten(x)
        if targets is None or eps == 0.0:
            for layer in self.fc_dist:
                h = layer(h)
            return self._scale(-h.view(h.shape[0], -1))
        use_ibp = lower is not None and upper is not None and all(math.isinf(layer.p) for layer in self.fc_dist)
        if use_ibp:
            lo_dom = torch.as_tensor(lower, dtype=x.dtype, device=x.device)
            up_dom = torch.as_tensor(upper, dtype=x.dtype, device=x.device)
            lo = torch.maximum(x - eps, lo_dom).reshape_as(h)
            up = torch.minimum(x + eps, up_dom).reshape_as(h)
            for layer in self.fc_dist:
                h, lo, up = layer(h, lo, up)
            z = -h.view(h.shape[0], -1)
            z_lower, z_upper = -up.view_as(z), -lo.view_as(z)
        else:
            for layer in self.fc_dist:
                h = layer(h)
            z = -h.view(h.shape[0], -1)
            z_lower, z_upper = z - eps, z + eps
        worst = worst_case_margin(z_lower, z_upper, targets, eps)
        return self._scale(z), worst
