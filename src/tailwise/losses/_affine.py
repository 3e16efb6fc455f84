"""Base class of the loss modules computing :math:`\\mathrm{CE}(a \\odot z + b, y)` (VS, LA, CDT, Bayias)."""

from __future__ import annotations

import torch
from torch import Tensor

from tailwise._validation import check_logits_target, compiling
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import _LOW_PRECISION
from tailwise.functional.vs import affine_fn
from tailwise.losses._weighted import ClassWeightedLoss


class AffineAdjustedLoss(ClassWeightedLoss):
    """A class-weighted loss of per-class affinely adjusted logits.

    Subclasses register the adjustment buffers and name them in ``_multiplier_buffer`` and
    ``_offset_buffer`` (``None``: no such term); a buffer whose entries are all the identity (1 for the
    multiplier, 0 for the offset) is skipped.
    """

    _multiplier_buffer: str | None = None
    _offset_buffer: str | None = None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        r""":math:`\mathrm{CE}(\mathrm{multiplier} \odot z + \mathrm{offset}, y)` with the module's weight.

        The same checks, in the same order, as the functional twin; those of the module's own state run
        when that state changes (see :mod:`tailwise.functional._prepared`).
        """
        buffers = self._buffers
        name = self._multiplier_buffer
        multiplier = None if name is None else buffers[name]
        name = self._offset_buffer
        offset = None if name is None else buffers[name]
        n = self.num_classes
        if n is not None and isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] != n:
            self._check_num_classes(logits)
        check_logits_target(logits, target)
        z = logits.float() if logits.dtype in _LOW_PRECISION else logits
        weight, reduction = self._buffers["weight"], self.reduction
        key = PreparedLosses.key("affine", z, multiplier, offset, weight, reduction)
        fn = self._prepared.get(key)
        if fn is None:
            fn = affine_fn(z, _unless_all(multiplier, 1.0), _unless_all(offset, 0.0), weight, reduction)
            self._prepared.put(key, fn, (multiplier, offset, weight))
        return fn(z, target if target.dtype == torch.int64 else target.long())


def _unless_all(vec: Tensor | None, value: float) -> Tensor | None:
    """``None`` when every entry of ``vec`` equals ``value`` (a term that changes nothing), else ``vec``.

    VS with ``gamma = 0`` has multipliers of exactly 1 and LA offsets ``tau * log(prior)``; skipping an
    identity term saves an operation per call, and deciding from the buffer (once per change) keeps the
    loss following its buffers after ``load_state_dict`` or in-place edits. Under ``torch.compile``
    ``vec`` is kept (the decision would read the buffer's values while tracing).
    """
    if vec is None or compiling():
        return vec
    if vec.numel() == 0 or not bool((vec == value).all()):
        return vec
    return None
