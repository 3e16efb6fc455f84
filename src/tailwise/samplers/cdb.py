r"""CDB-S: class-difficulty-based sampling.

Sinha, Ohashi and Nakamura, "Class-Difficulty Based Methods for Long-Tailed Visual Recognition",
IJCV 2022 (arXiv 2207.14499), which adds CDB-S to the CDB-W loss of their ACCV 2020 paper.

**No official code exists** for CDB-S. This implementation follows the paper's description as
recorded in the project's spec (``specs/longtail.md`` §4, from recollection of the paper; to be
checked against the PDF); every unverified point is an option:

* the class difficulty :math:`d_c = 1 - A_c` is measured on the held-out validation split after each
  epoch (:meth:`CDBSampler.update_from_validation`), exactly as for CDB-W;
* a class is drawn with probability :math:`p_c \propto d_c^{\tau}` with the same :math:`\tau` options as
  CDB-W (``"dynamic"`` with the ``"cifar"`` or ``"imagenet"`` rule, or a fixed number;
  :func:`~tailwise.functional.cdb_weights` computes both), and the instance within the class uniformly;
* draws are i.i.d. **with replacement**, ``len(labels)`` per epoch, and the sampler is rebuilt each
  epoch from the latest difficulty (choice: replacement; the paper's policy is unverified);
* before the first measurement the difficulty is all ones, i.e. class-balanced sampling
  (``initial="class_balanced"``, matching CDB-W's all-ones start), or instance-balanced
  (``initial="instance"``, plain uniform over the dataset) by choice;
* a class at 100 % validation accuracy would get probability 0 (``zero_weight="official"``), so the
  default here is ``zero_weight="epsilon"``: difficulty clamped at ``epsilon`` so that every class keeps
  being visited (there is no official behaviour to reproduce; this also avoids the 0/0 when every
  class is perfect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tailwise._validation import check_in_choices, describe
from tailwise.functional.cdb import TAU_RULES, ZERO_WEIGHT_MODES, cdb_weights, class_accuracy_from_logits
from tailwise.registry import SAMPLERS
from tailwise.samplers.class_probability import ClassProbabilitySampler

__all__ = ["CDBSampler"]

_INITIAL = ("class_balanced", "instance")


@SAMPLERS.register("cdb", "cdb_s")
class CDBSampler(ClassProbabilitySampler):
    r"""Classes drawn :math:`\propto d_c^\tau` from the validation difficulty, uniform within a class.

    Args:
        labels: 1-D integer training labels.
        num_classes: number of classes (``max(labels) + 1`` when omitted).
        tau: ``"dynamic"`` or a fixed exponent :math:`\tau \ge 0`.
        tau_rule: ``"cifar"`` or ``"imagenet"`` dynamic-:math:`\tau` formula (see :mod:`tailwise.functional.cdb`).
        zero_weight: ``"epsilon"`` (default; clamp :math:`d_c \ge` ``epsilon``) or ``"official"``
            (CDB-W's behaviour: a perfect class is never drawn).
        epsilon: the difficulty clamp.
        initial: distribution before the first :meth:`update_from_validation`: ``"class_balanced"``
            (default) or ``"instance"``.
        num_replicas, rank, seed, num_samples, drop_last: as in :class:`ClassProbabilitySampler`. The draw
            of an epoch is a pure function of ``(seed, epoch)`` and the stored difficulty, which
            :meth:`state_dict` saves.

    Under DDP call :meth:`update_from_validation` on every rank with the validation logits gathered
    over ranks (the trainer does), so all ranks hold the same difficulty and draw the same sequence.
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        num_classes: int | None = None,
        tau: str | float = "dynamic",
        tau_rule: str = "cifar",
        zero_weight: str = "epsilon",
        epsilon: float = 0.01,
        initial: str = "class_balanced",
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(labels, None, num_classes, num_replicas, rank, seed, num_samples, drop_last)
        check_in_choices("tau_rule", tau_rule, TAU_RULES)
        check_in_choices("zero_weight", zero_weight, ZERO_WEIGHT_MODES)
        self.initial = check_in_choices("initial", initial, _INITIAL)
        self.tau = tau
        self.tau_rule = tau_rule
        self.zero_weight = zero_weight
        self.epsilon = epsilon
        self.difficulty = torch.ones(self.num_classes, dtype=torch.float64)
        self.measured = False
        cdb_weights(self.difficulty, tau, tau_rule, zero_weight, epsilon)  # validates tau / epsilon
        self._rebuild()

    def _rebuild(self) -> None:
        present = (self.class_counts > 0).to(torch.float64)
        if not self.measured and self.initial == "instance":
            self.set_class_probs(self.class_counts.to(torch.float64))
            return
        w = cdb_weights(self.difficulty, self.tau, self.tau_rule, self.zero_weight, self.epsilon) * present
        if float(w.sum()) <= 0:
            raise ValueError(
                "every class present in the training labels has difficulty 0 (100% validation accuracy); "
                "CDB-S probabilities are undefined with zero_weight='official'; use zero_weight='epsilon'"
            )
        self.set_class_probs(w)

    def update_from_accuracy(self, class_accuracy: Tensor | Sequence[float]) -> None:
        """Set :math:`d = 1 - A` from a per-class accuracy (``NaN``: keep the previous difficulty) and rebuild."""
        acc = torch.as_tensor(class_accuracy, dtype=torch.float64).detach().cpu()
        if acc.shape != (self.num_classes,):
            raise ValueError(f"class_accuracy must have shape ({self.num_classes},); got {describe(class_accuracy)}")
        known = ~torch.isnan(acc)
        if bool(((acc[known] < 0) | (acc[known] > 1)).any()):
            raise ValueError(f"class_accuracy must lie in [0, 1]; got {acc.tolist()}")
        d = self.difficulty.clone()
        d[known] = 1.0 - acc[known]
        self.difficulty = d
        self.measured = True
        self._rebuild()

    def update_from_validation(self, logits: Tensor, target: Tensor, epoch: int | None = None) -> None:
        """Per-class validation accuracy → difficulty → class probabilities for the next epochs (trainer hook)."""
        acc, _ = class_accuracy_from_logits(logits, target, self.num_classes)
        self.update_from_accuracy(acc)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, seed and the measured difficulty: all that determines the draw."""
        return {**super().state_dict(), "difficulty": self.difficulty.clone(), "measured": self.measured}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and rebuild the class probabilities."""
        super().load_state_dict(state)
        d = torch.as_tensor(state["difficulty"], dtype=torch.float64).cpu()
        if d.shape != (self.num_classes,):
            raise ValueError(f"state['difficulty'] must have shape ({self.num_classes},); got {describe(state['difficulty'])}")
        self.difficulty = d.clone()
        self.measured = bool(state.get("measured", True))
        self._rebuild()
