r"""The LDAM-DRW "train rules" as per-epoch class-weight schedules (Cao et al., NeurIPS 2019, §3.3).

A weight schedule answers ``weight(epoch) -> Tensor | None``; the trainer hands the result to the loss
with ``loss.set_weight(weight)`` at the start of every epoch. The rules of the official
``cifar_train.py`` (identical in the VS-Loss and ABSGD forks):

- ``None`` (:class:`NoReweighting`): no class weights in any epoch;
- ``Reweight`` (:class:`Reweighting`, "CB RW"): class-balanced effective-number weights (Cui et al.,
  CVPR 2019) from epoch 0;
- ``DRW`` (:class:`DeferredReweighting`): no weights before ``switch_epoch`` (160 of 200, the first LR
  drop), the effective-number weights afterwards.

The effective-number weights are

.. math:: w_c = \frac{1-\beta}{1-\beta^{n_c}}, \qquad w \leftarrow C\, w / \textstyle\sum_k w_k,

with :math:`\beta = 0.9999`; the official DRW code computes them with :math:`\beta = 0` before the switch,
which gives all ones, and the weights enter the loss with PyTorch's weighted mean
:math:`\sum_i w_{y_i}\ell_i/\sum_i w_{y_i}`.

The fourth rule, ``Resample`` ("CB RS"), draws samples with replacement with probabilities proportional
to the same effective-number weights of their class. It changes *which* samples are seen, not the loss,
so it is a sampler (see :mod:`tailwise.samplers`), not a weight schedule.

Unlike the official code (``betas[epoch // 160]``, an ``IndexError`` past epoch 319), the switch epoch is
configurable and any epoch after it keeps the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from tailwise._validation import check_class_counts, describe
from tailwise.class_counts import effective_number_weights
from tailwise.registry import WEIGHT_SCHEDULES

__all__ = ["DeferredReweighting", "NoReweighting", "Reweighting"]

CountsLike = Sequence[float] | Tensor | np.ndarray


def _check_epoch(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative integer; got {describe(value)}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _check_beta(beta: Any) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"beta must be a number in [0, 1); got {describe(beta)}")
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"beta must lie in [0, 1); got {beta!r}")
    return float(beta)


class _EpochState:
    """Holds the current epoch (``set_epoch``) and serialises the schedule's state."""

    _keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Record the current 0-indexed epoch (the trainer calls this at the start of every epoch)."""
        self.epoch = _check_epoch("epoch", epoch)

    def _resolve(self, epoch: int | None) -> int:
        return self.epoch if epoch is None else _check_epoch("epoch", epoch)

    def state_dict(self) -> dict[str, Any]:
        """The current epoch and the hyper-parameters (``class_counts`` as a list of floats)."""
        state: dict[str, Any] = {"epoch": self.epoch}
        for key in self._keys:
            value = getattr(self, key)
            state[key] = value.tolist() if isinstance(value, Tensor) else value
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`.

        Raises:
            ValueError: a missing or unknown key, or invalid values.
        """
        expected = {"epoch", *self._keys}
        missing = sorted(expected - set(state))
        unknown = sorted(set(state) - expected)
        if missing or unknown:
            raise ValueError(
                f"state for {type(self).__name__} must have keys {sorted(expected)}; "
                f"missing {missing}, unknown {unknown}"
            )
        self._restore({k: state[k] for k in self._keys})
        self.set_epoch(state["epoch"])

    def _restore(self, values: dict[str, Any]) -> None:
        """Re-apply saved hyper-parameters (schedules without any keep the default no-op)."""


@WEIGHT_SCHEDULES.register("none")
class NoReweighting(_EpochState):
    """The ``None`` train rule: no class weights in any epoch (``weight`` returns ``None``)."""

    def weight(self, epoch: int | None = None) -> None:
        """``None`` for every epoch (the loss runs unweighted)."""
        self._resolve(epoch)
        return None

    def __repr__(self) -> str:
        return "NoReweighting()"


@WEIGHT_SCHEDULES.register("drw")
class DeferredReweighting(_EpochState):
    r"""Deferred re-weighting (DRW): all-ones weights before ``switch_epoch``, effective-number after.

    .. math:: w_c(e) = \begin{cases} 1 & e < e_s \\
       C\,\dfrac{(1-\beta)/(1-\beta^{n_c})}{\sum_k (1-\beta)/(1-\beta^{n_k})} & e \ge e_s \end{cases}

    Both phases return a float64 ``(C,)`` tensor summing to ``C``, as the official code does (it uses
    :math:`\beta = 0` before the switch).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        beta: effective-number :math:`\beta \in [0, 1)` after the switch (0.9999).
        switch_epoch: first 0-indexed epoch with re-weighting (160 of 200 in LDAM-DRW).

    Example:
        >>> drw = DeferredReweighting([5000, 500, 50], switch_epoch=160)
        >>> drw.weight(0).tolist()
        [1.0, 1.0, 1.0]
    """

    _keys = ("class_counts", "beta", "switch_epoch")

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999, switch_epoch: int = 160) -> None:
        super().__init__()
        self._configure(class_counts, beta, switch_epoch)

    def _configure(self, class_counts: CountsLike, beta: float, switch_epoch: int) -> None:
        self.class_counts = check_class_counts(class_counts)
        self.beta = _check_beta(beta)
        self.switch_epoch = _check_epoch("switch_epoch", switch_epoch)
        self._before = effective_number_weights(self.class_counts, 0.0)
        self._after = effective_number_weights(self.class_counts, self.beta)

    def _restore(self, values: dict[str, Any]) -> None:
        self._configure(values["class_counts"], values["beta"], values["switch_epoch"])

    def weight(self, epoch: int | None = None) -> Tensor:
        """The ``(C,)`` float64 class weights for ``epoch`` (the epoch of ``set_epoch`` when omitted)."""
        e = self._resolve(epoch)
        return (self._after if e >= self.switch_epoch else self._before).clone()

    def __repr__(self) -> str:
        return f"DeferredReweighting(num_classes={self.class_counts.numel()}, beta={self.beta}, switch_epoch={self.switch_epoch})"


@WEIGHT_SCHEDULES.register("reweight")
class Reweighting(_EpochState):
    r"""The ``Reweight`` rule ("CB RW"): effective-number weights from epoch 0.

    .. math:: w_c = C\,\frac{(1-\beta)/(1-\beta^{n_c})}{\sum_k (1-\beta)/(1-\beta^{n_k})}

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        beta: :math:`\beta \in [0, 1)` (0.9999).
    """

    _keys = ("class_counts", "beta")

    def __init__(self, class_counts: CountsLike, beta: float = 0.9999) -> None:
        super().__init__()
        self._configure(class_counts, beta)

    def _configure(self, class_counts: CountsLike, beta: float) -> None:
        self.class_counts = check_class_counts(class_counts)
        self.beta = _check_beta(beta)
        self._weights = effective_number_weights(self.class_counts, self.beta)

    def _restore(self, values: dict[str, Any]) -> None:
        self._configure(values["class_counts"], values["beta"])

    def weight(self, epoch: int | None = None) -> Tensor:
        """The ``(C,)`` float64 class weights (the same for every epoch)."""
        self._resolve(epoch)
        return self._weights.clone()

    def __repr__(self) -> str:
        return f"Reweighting(num_classes={self.class_counts.numel()}, beta={self.beta})"

