"""Base class of the loss modules computing :math:`\\mathrm{CE}(a \\odot z + b, y)` (VS, LA, CDT, Bayias)."""

from __future__ import annotations

import torch
from torch import Tensor

from tailwise._validation import check_logits_target
from tailwise.functional.ce import _compute_logits
from tailwise.functional.vs import affine_fn
from tailwise.losses._weighted import ClassWeightedLoss


class AffineAdjustedLoss(ClassWeightedLoss):
    """A class-weighted loss of per-class affinely adjusted logits; subclasses pick the two vectors."""

    def _affine_forward(
        self, logits: Tensor, target: Tensor, multiplier: Tensor | None, offset: Tensor | None
    ) -> Tensor:
        r""":math:`\mathrm{CE}(\mathrm{multiplier} \odot z + \mathrm{offset}, y)` with the module's weight.

        The same checks, in the same order, as the functional twin; those of the module's own state run
        when that state changes (see :meth:`ClassWeightedLoss._constants`).
        """
        self._check_num_classes(logits)
        check_logits_target(logits, target)
        z = _compute_logits(logits)
        weight, reduction = self.weight, self.reduction
        fn = self._constants(
            z, (multiplier, offset, weight), (reduction,), lambda: affine_fn(z, multiplier, offset, weight, reduction)
        )
        return fn(z, target if target.dtype == torch.int64 else target.long())
