r"""Post-hoc temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

A single temperature :math:`T > 0` rescales the logits, :math:`z \mapsto z / T`, and is chosen to
minimise the validation negative log-likelihood

.. math::
    T^\star = \arg\min_{T > 0} \; -\frac{1}{N}\sum_{i=1}^{N} \log \operatorname{softmax}(z_i / T)_{y_i}.

The argmax (hence accuracy) is unchanged. The NLL is convex in :math:`\beta = 1/T`, so it has a
single minimum when one exists. Here it is minimised over :math:`t = \log T` (which keeps ``T``
positive without constraints) with L-BFGS and a strong-Wolfe line search, in float64 on detached
logits, so the fit is deterministic for fixed inputs on a given device.

When the minimum is at the boundary (every validation sample already correct with the right margin
ordering, :math:`T \to 0`; or logits carrying no information, :math:`T \to \infty`) the optimiser
stops after ``max_iter`` iterations at a very small or very large temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_logits_target, check_positive, describe

__all__ = ["TemperatureScaler", "fit_temperature"]


def fit_temperature(
    logits_val: Tensor,
    target_val: Tensor,
    max_iter: int = 100,
    init: float = 1.5,
    tolerance_grad: float = 1e-10,
    tolerance_change: float = 1e-14,
) -> float:
    r"""Fit the temperature that minimises the NLL of ``softmax(logits_val / T)`` on ``target_val``.

    Args:
        logits_val: ``[N, C]`` validation logits (detached and cast to float64 here).
        target_val: ``[N]`` integer validation labels.
        max_iter: maximum number of L-BFGS iterations.
        init: initial temperature (1.5 as in the reference implementation of Guo et al.).
        tolerance_grad: L-BFGS first-order stopping tolerance on :math:`|\partial \mathrm{NLL} / \partial \log T|`.
        tolerance_change: L-BFGS stopping tolerance on the change of ``log T`` or of the loss.

    Returns:
        The fitted temperature ``T > 0`` as a Python float.

    Raises:
        TypeError / ValueError: bad logits or labels, no sample, non-positive ``init`` or ``max_iter``.
        RuntimeError: the optimisation produced a non-finite temperature.
    """
    check_logits_target(logits_val, target_val, logits_name="logits_val", target_name="target_val")
    if logits_val.shape[0] == 0:
        raise ValueError(f"logits_val must hold at least one sample; got {describe(logits_val)}")
    init = check_positive("init", init)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}")
    z = logits_val.detach().to(torch.float64)
    y = target_val.detach().to(z.device).long()
    log_t = torch.tensor(math.log(init), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4 + 1,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z * torch.exp(-log_t), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    temperature = math.exp(float(log_t.detach()))
    if not math.isfinite(temperature) or temperature <= 0.0:
        raise RuntimeError(f"temperature fit diverged (T = {temperature}); check the validation logits")
    return temperature


class TemperatureScaler(nn.Module):
    """Module that divides logits by a fitted temperature: ``forward(logits) = logits / T``.

    ``T`` lives in the float64 buffer ``temperature`` (1.0, the identity, until :meth:`fit`), so it is
    saved by ``state_dict`` and moves with ``.to(device)``.

    Args:
        temperature: initial temperature (> 0).

    Example:
        >>> scaler = TemperatureScaler().fit(val_logits, val_labels)  # doctest: +SKIP
        >>> calibrated = scaler(test_logits).softmax(dim=1)  # doctest: +SKIP
    """

    temperature: Tensor

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor(check_positive("temperature", temperature), dtype=torch.float64))

    def fit(self, logits_val: Tensor, target_val: Tensor, max_iter: int = 100, init: float = 1.5) -> TemperatureScaler:
        """Fit ``T`` on validation logits and labels with :func:`fit_temperature`; returns ``self``."""
        t = fit_temperature(logits_val, target_val, max_iter=max_iter, init=init)
        self.temperature.fill_(t)
        return self

    def forward(self, logits: Tensor) -> Tensor:
        """``logits / T`` in the dtype of ``logits``."""
        return logits / self.temperature.to(device=logits.device, dtype=logits.dtype)

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4f}"
