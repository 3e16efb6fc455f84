r"""Susceptibility :math:`\zeta` tracker and model selection (Forouzesh et al., ICLR 2023).

Mahsa Forouzesh, Hanie Sedghi, Patrick Thiran, "Leveraging Unlabeled Data to Track Memorization",
ICLR 2023 (arXiv 2212.04461). The per-epoch probe is
:func:`tailwise.functional.susceptibility_probe`; the aggregation is
:func:`tailwise.functional.susceptibility_zeta`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._validation import check_in_choices, describe
from tailwise.functional.susceptibility import ZETA_AGGREGATIONS, susceptibility_probe, susceptibility_zeta

__all__ = ["SusceptibilityTracker", "select_models"]


class SusceptibilityTracker:
    r"""Per-epoch susceptibility probes and their running average :math:`\zeta`.

    Call :meth:`step` once per epoch (the official code probes at the *start* of every epoch, before
    training on it). Each call draws ``batch_size`` inputs of ``unlabeled_x`` without replacement and
    random labels from the generator, runs the one-step probe on copies of the model and optimiser and
    records :math:`(\tilde\Phi(w_t), \tilde\Phi(\tilde w_{t+1}))`; :math:`r_t` is their difference.
    The official code probes the first batch of a shuffled loader over the *training images* with all
    labels redrawn, under the training augmentation; pass such a pool (or an unlabeled set) as
    ``unlabeled_x``.

    :attr:`zeta` aggregates the recorded :math:`r_t` with ``aggregation``:

    * ``"running_mean"`` (default, the paper): :math:`\zeta(t) = \frac{1}{t+1}\sum_{\tau \le t} r_\tau`;
    * ``"notebook"`` (``results.ipynb``): :math:`\zeta(t) = \frac1t\sum_{\tau=1}^{t-1} r_\tau`, ``t = 1..T-1``.

    The history is saved by :meth:`state_dict`. Under DDP the probe runs locally on every rank; with
    the same generator seed and inputs on every rank the histories are identical, otherwise they are
    per-rank (log rank 0's).

    Args:
        num_classes: number of classes of the random labels.
        batch_size: probe batch size (official 128); the whole pool when it is smaller.
        aggregation: ``"running_mean"`` or ``"notebook"``.
        criterion: probe loss (default mean cross-entropy).
        train_mode: probe in train mode (official) or eval mode.
        use_optimizer_state: step with a copy of the training optimiser (official) or a fresh SGD.
    """

    def __init__(
        self,
        num_classes: int,
        batch_size: int = 128,
        aggregation: str = "running_mean",
        criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
        train_mode: bool = True,
        use_optimizer_state: bool = True,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.aggregation = check_in_choices("aggregation", aggregation, ZETA_AGGREGATIONS)
        self.criterion = criterion
        self.train_mode = bool(train_mode)
        self.use_optimizer_state = bool(use_optimizer_state)
        self.loss_before: list[float] = []
        self.loss_after: list[float] = []

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        unlabeled_x: Tensor,
        generator: torch.Generator | None = None,
    ) -> float:
        """Probe the model once (one epoch) and record the result.

        Args:
            model: the network being trained (left untouched).
            optimizer: its training optimiser (left untouched).
            unlabeled_x: pool of inputs ``[M, ...]`` to draw the probe batch from.
            generator: source of the batch indices and the random labels.

        Returns:
            :math:`r_t = \\tilde\\Phi(w_t) - \\tilde\\Phi(\\tilde w_{t+1})`.
        """
        if not isinstance(unlabeled_x, Tensor) or unlabeled_x.ndim < 1 or unlabeled_x.shape[0] == 0:
            raise ValueError(f"unlabeled_x must be a non-empty tensor [M, ...]; got {describe(unlabeled_x)}")
        m = unlabeled_x.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if m > self.batch_size:
            idx = torch.randperm(m, generator=generator, device=gen_device)[: self.batch_size]
            x = unlabeled_x[idx.to(unlabeled_x.device)]
        else:
            x = unlabeled_x
        before, after = susceptibility_probe(
            model,
            optimizer,
            x,
            self.num_classes,
            generator=generator,
            criterion=self.criterion,
            train_mode=self.train_mode,
            use_optimizer_state=self.use_optimizer_state,
        )
        self.record(before, after)
        return before - after

    def record(self, loss_before: float, loss_after: float) -> None:
        """Append one epoch's probe result (e.g. computed elsewhere)."""
        self.loss_before.append(float(loss_before))
        self.loss_after.append(float(loss_after))

    @property
    def r(self) -> Tensor:
        """Per-epoch loss decreases :math:`r_t` (float64)."""
        return torch.tensor(self.loss_before, dtype=torch.float64) - torch.tensor(self.loss_after, dtype=torch.float64)

    @property
    def epochs(self) -> Tensor:
        """Epoch axis of :attr:`zeta`."""
        return susceptibility_zeta(self.loss_before, self.loss_after, self.aggregation)[0]

    @property
    def zeta(self) -> Tensor:
        """The susceptibility curve :math:`\\zeta` (see the class docstring)."""
        return susceptibility_zeta(self.loss_before, self.loss_after, self.aggregation)[1]

    def current(self) -> float:
        """The latest :math:`\\zeta` value (NaN before there is one)."""
        z = self.zeta
        return float(z[-1]) if z.numel() else float("nan")

    def reset(self) -> None:
        """Forget the recorded history."""
        self.loss_before.clear()
        self.loss_after.clear()

    def state_dict(self) -> dict[str, Any]:
        """The recorded history (float64 tensors) and the aggregation rule."""
        return {
            "loss_before": torch.tensor(self.loss_before, dtype=torch.float64),
            "loss_after": torch.tensor(self.loss_after, dtype=torch.float64),
            "aggregation": self.aggregation,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a history saved by :meth:`state_dict`."""
        missing = [k for k in ("loss_before", "loss_after") if k not in state]
        if missing:
            raise ValueError(f"susceptibility state_dict is missing key(s) {missing}; got keys {sorted(state)}")
        before = torch.as_tensor(state["loss_before"], dtype=torch.float64).flatten()
        after = torch.as_tensor(state["loss_after"], dtype=torch.float64).flatten()
        if before.shape != after.shape:
            raise ValueError(f"loss_before and loss_after must have the same length; got {before.numel()} and {after.numel()}")
        self.loss_before = before.tolist()
        self.loss_after = after.tolist()
        if "aggregation" in state:
            self.aggregation = check_in_choices("aggregation", state["aggregation"], ZETA_AGGREGATIONS)

    def __repr__(self) -> str:
        return (
            f"SusceptibilityTracker(num_classes={self.num_classes}, batch_size={self.batch_size}, "
            f"aggregation={self.aggregation!r}, epochs_recorded={len(self.loss_before)})"
        )


def select_models(
    runs: Sequence[Mapping[str, Any]],
    accuracy_key: str = "train_accuracy",
    zeta_key: str = "zeta",
) -> list[int]:
    r"""Indices of the runs in "Region 1": training accuracy above the mean and :math:`\zeta` below it.

    The model-selection rule of Forouzesh et al. (README of the official code): among candidate
    models trained on the same noisy data, split at the mean training accuracy (on the noisy training
    set) and the mean susceptibility :math:`\zeta`, and keep those that fit the training set well
    while resisting memorisation (both comparisons strict).

    Args:
        runs: one mapping per candidate with at least ``accuracy_key`` and ``zeta_key`` (other keys
            are ignored).
        accuracy_key: key of the training accuracy.
        zeta_key: key of the susceptibility.

    Returns:
        Indices into ``runs`` of the selected models, in order (possibly empty).
    """
    if len(runs) == 0:
        raise ValueError("runs must hold at least one candidate; got an empty sequence")
    acc, zeta = [], []
    for i, run in enumerate(runs):
        for key in (accuracy_key, zeta_key):
            if key not in run:
                raise ValueError(f"runs[{i}] must have the key {key!r}; got keys {sorted(run)}")
        acc.append(float(run[accuracy_key]))
        zeta.append(float(run[zeta_key]))
    acc_t = torch.tensor(acc, dtype=torch.float64)
    zeta_t = torch.tensor(zeta, dtype=torch.float64)
    keep = (acc_t > acc_t.mean()) & (zeta_t < zeta_t.mean())
    return [int(i) for i in torch.nonzero(keep).flatten()]
