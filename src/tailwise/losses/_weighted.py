"""Base class for loss modules that hold an optional per-class ``weight`` buffer.

It implements the trainer hook ``set_weight(weight)`` (the DRW schedule hands its per-epoch weights to
the loss this way) and makes ``load_state_dict`` accept a state saved with or without a weight, so a
checkpoint written after the DRW switch restores into a freshly built loss (whose weight is ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tailwise._validation import check_reduction, check_weight
from tailwise.functional._prepared import PreparedLosses


class ClassWeightedLoss(nn.Module):
    """An ``nn.Module`` loss with a ``reduction`` and an optional ``(C,)`` ``weight`` buffer.

    Args:
        num_classes: expected weight length, or ``None`` when unknown (any length is accepted).
        weight: initial per-class weights, or ``None``.
        reduction: ``"none" | "mean" | "sum"``.
    """

    weight: Tensor | None

    def __init__(self, num_classes: int | None, weight: Tensor | Sequence[float] | None, reduction: str) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", None)
        self._prepared = PreparedLosses(maxsize=1)  # the checked, cast constants of the current state
        self.set_weight(weight)

    def _check_num_classes(self, logits: Tensor) -> None:
        """Raise ``ValueError`` unless ``logits`` has ``num_classes`` columns (when known)."""
        n = self.num_classes
        if n is not None and isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] != n:
            raise ValueError(
                f"logits must have {n} columns, one per class of class_counts; got shape {tuple(logits.shape)}"
            )

    def _reference_buffer(self) -> Tensor | None:
        for name, buf in self.named_buffers():
            if name != "weight" and buf is not None:
                return buf
        return None

    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Replace the per-class weights (``None`` removes them).

        The weights are stored as float64 (or the dtype of the module's other floating buffers) on the
        device of the module's other buffers.

        Raises:
            ValueError: a weight of the wrong length or with non-finite entries.
        """
        if weight is None:
            self.weight = None
            return
        n = self.num_classes
        if n is None:
            n = int(weight.numel()) if isinstance(weight, Tensor) else len(weight)
        w = check_weight(weight, n)
        assert w is not None
        ref = self._reference_buffer()
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
        device = ref.device if ref is not None else w.device
        self.weight = w.detach().to(device=device, dtype=dtype).clone()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "weight"
        if key in state_dict:
            saved = state_dict[key]
            if self.weight is None or self.weight.shape != saved.shape:
                self.set_weight(saved)
        else:
            self.weight = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, weighted={self.weight is not None}"
