"""l_inf certification of l_inf-distance nets, and a PGD l_inf attack for the empirical check.

Zhang et al. (ICML 2021; ICLR 2022). At ``p = ∞`` each output ``z_j = −u_{L,j}`` of an l_inf-distance
net is 1-Lipschitz in ``‖·‖_∞``, so a point is certified at radius ``ε`` by

* the **margin certificate**: ``max_{j≠y}(z_j − z_y) < −2ε``; for logits ``s·z`` with ``s > 0`` this reads
  ``max_{j≠y}(g_j − g_y) < −2 s ε`` (:func:`margin_certified`, any network with per-logit l_inf
  Lipschitz constant ``L``: margin ``> 2Lε``);
* the **IBP certificate**: interval bounds of ``z`` over the box ``[max(x − ε, lower), min(x + ε, upper)]``,
  certified iff ``z̄_j < z̲_y`` for all ``j ≠ y`` (at least as tight as the margin certificate).

Both read the ``worst`` tensor of :class:`tailwise.models.LinfDistMLP`: certified iff ``worst_{bj} < 0``
for every ``j ≠ y_b``. The official ``certified_test`` uses ``argmax(worst) = y``, which differs only on
exact ties (``worst_{bj} = 0``), where this module does not certify.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_logits_target, check_positive, describe

__all__ = ["certified_from_worst", "linf_certify", "margin_certified", "pgd_attack"]


def certified_from_worst(worst: Tensor, targets: Tensor) -> Tensor:
    """Boolean ``(B,)``: ``worst[b, j] < 0`` for every ``j ≠ y_b`` (``worst[b, y_b]`` is ignored)."""
    if not isinstance(worst, Tensor) or worst.ndim != 2:
        raise ValueError(f"worst must have shape (B, C); got {describe(worst)}")
    if not isinstance(targets, Tensor) or targets.shape != (worst.shape[0],):
        raise ValueError(f"targets must have shape ({worst.shape[0]},); got {describe(targets)}")
    w = worst.scatter(1, targets.long().view(-1, 1), -math.inf)
    return (w < 0).all(dim=1)


def margin_certified(logits: Tensor, targets: Tensor, eps: float, lipschitz: float = 1.0) -> Tensor:
    """Margin certificate ``max_{j≠y}(g_j − g_y) < −2Lε`` for logits that are each ``L``-Lipschitz in l_inf.

    For an :class:`~tailwise.models.LinfDistMLP` at ``p = ∞`` with learned scale ``s``, pass
    ``lipschitz = s`` (or ``z = −u_L`` with ``lipschitz = 1``).
    """
    check_logits_target(logits, targets)
    eps = check_positive("eps", eps, allow_zero=True)
    lipschitz = check_positive("lipschitz", lipschitz)
    t = targets.long().view(-1, 1)
    margin = (logits - logits.gather(1, t)).scatter(1, t, -math.inf).amax(1)
    return margin < -2.0 * lipschitz * eps


@torch.no_grad()
def linf_certify(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    eps: float,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
    method: str = "ibp",
) -> tuple[Tensor, Tensor]:
    """Certify an l_inf-distance net at radius ``eps`` (official ``certified_test``).

    The model is switched to ``p = ∞`` and eval mode for the call and restored afterwards.

    Args:
        model: a model with ``set_p``, ``p`` and ``forward(x, targets, eps, lower, upper)`` returning
            ``(logits, worst)`` (e.g. :class:`tailwise.models.LinfDistMLP`).
        x: inputs (normalised).
        targets: labels ``(B,)``.
        eps: radius in the same (normalised) units.
        lower: lower end of the input domain (used by IBP; e.g. the normalised 0).
        upper: upper end of the input domain.
        method: ``"ibp"`` (box clipped to ``[lower, upper]`` when given) or ``"margin"`` (Lipschitz).

    Returns:
        ``(correct, certified)`` boolean tensors ``(B,)``; ``certified`` implies ``correct``.
    """
    check_in_choices("method", method, ("ibp", "margin"))
    eps = check_positive("eps", eps)
    if not hasattr(model, "set_p"):
        raise TypeError(f"model must be an l_inf-distance net with set_p(); got {type(model).__name__}")
    old_p, was_training = model.p, model.training
    model.set_p(math.inf)
    model.eval()
    try:
        if method == "ibp":
            lo = -math.inf if lower is None else lower
            up = math.inf if upper is None else upper
            logits, worst = model(x, targets, eps, lo, up)
        else:
            logits, worst = model(x, targets, eps)
    finally:
        model.set_p(old_p)
        model.train(was_training)
    correct = logits.argmax(1) == targets
    return correct, certified_from_worst(worst, targets) & correct


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
    random_start: bool = True,
    loss: str = "ce",
) -> Tensor:
    """Projected gradient ascent in the l_inf ball (Madry et al., 2018) for empirical robustness.

    ``x^{t+1} = Π_{B_∞(x, ε) ∩ [lower, upper]}(x^t + a·sign(∇ℓ(x^t)))`` from a uniform random start in the
    ball (drawn from ``generator``). The model is evaluated in its current mode; its parameter gradients
    are left untouched.

    Args:
        model: maps inputs to logits.
        x: clean inputs.
        y: labels ``(B,)``.
        eps: l_inf radius.
        steps: number of steps.
        step_size: step ``a`` (default ``2.5·ε/steps``).
        generator: random generator on ``x``'s device for the random start.
        lower: lower end of the input domain (scalar or tensor), or ``None``.
        upper: upper end of the input domain, or ``None``.
        random_start: start from a uniform point of the ball (else from ``x``).
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (``max_{j≠y} g_j − g_y``).

    Returns:
        The adversarial inputs (detached), within the ball and the domain.
    """
    check_in_choices("loss", loss, ("ce", "margin"))
    eps = check_positive("eps", eps, allow_zero=True)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    a = 2.5 * eps / max(steps, 1) if step_size is None else check_positive("step_size", step_size)
    x = x.detach()
    lo = x - eps
    hi = x + eps
    if lower is not None:
        lo = torch.maximum(lo, torch.as_tensor(lower, dtype=x.dtype, device=x.device))
    if upper is not None:
        hi = torch.minimum(hi, torch.as_tensor(upper, dtype=x.dtype, device=x.device))

    def project(v: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(v, lo), hi)

    adv = x.clone()
    if random_start and eps > 0:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = project(x + (2 * u - 1) * eps)
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        obj: Any
        if loss == "ce":
            obj = F.cross_entropy(logits, y, reduction="sum")
        else:
            t = y.view(-1, 1)
            obj = (logits - logits.gather(1, t)).scatter(1, t, -math.inf).amax(1).sum()
        (grad,) = torch.autograd.grad(obj, [adv])
        adv = project(adv.detach() + a * grad.sign())
    return adv.detach()
