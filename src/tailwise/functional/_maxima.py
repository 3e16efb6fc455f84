r"""Where each row's maximum is, for the gradient of a row maximum in the fused CPU kernels.

A loss built on the distances :math:`d_{ij} = \max_k z_{ik} - z_{ij}` (CALS, MbLS) sends, besides
:math:`-\partial/\partial d_{ij}` to every logit, each row's total :math:`\sum_j \partial/\partial
d_{ij}` (its *share*) to the row's maximum: split evenly among tied maxima for ``amax``, all of it to
the first maximum for ``Tensor.max``. Given the 0/1 mask of the maxima (``z == max``, in the logits'
dtype), one matrix-vector product with the column codes :math:`C + j` finds every row's maximum at
once: a row's code sum :math:`\sum_j [\text{max at } j]\,(C + j)` lies in :math:`[C, 2C)` exactly when
the row has a single maximum, at :math:`j = \text{sum} - C`; two or more give at least
:math:`2C + 1`, and a row without one (NaN logits) gives 0. The sums are exact integers in float32
below :math:`2^{24}` (and in float64 far beyond), so the codes are only used where :math:`4C` stays
below that. One reduction over the codes (one host read) says whether every row has a single maximum;
then the shares are scattered to those indices instead of being added through the mask. Elsewhere
(other devices, where the read would synchronise, or low-precision dtypes) the callers use the mask or
``Tensor.max``'s indices directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["add_at_first_maximum", "add_at_maxima", "maxima_codes", "single_maximum_index"]

# the class counts below which 4C is an exact integer sum in each dtype
_EXACT_CLASSES = {torch.float32: 1 << 22, torch.float64: 1 << 50}


def maxima_codes(like: Tensor) -> Tensor | None:
    """The column codes :math:`C + j` for logits like ``like`` (``[N, C]``), or ``None`` where not used.

    ``None`` off the CPU (the test for ties would synchronise the device) and for dtypes other than
    float32 (fewer than :math:`2^{22}` classes) and float64.
    """
    c = like.shape[1]
    if not like.is_cpu or c >= _EXACT_CLASSES.get(like.dtype, 0):
        return None
    return torch.arange(c, 2 * c, dtype=like.dtype)


def single_maximum_index(at_max: Tensor, codes: Tensor) -> Tensor | None:
    """The ``[N, 1]`` int64 column of each row's maximum, or ``None`` when some row has none or several.

    Args:
        at_max: ``[N, C]`` 0/1 mask of the row maxima, in ``codes``' dtype.
        codes: the column codes of :func:`maxima_codes`.
    """
    c = at_max.shape[1]
    sums = torch.mv(at_max, codes)
    low, high = torch.aminmax(sums)
    if float(low) >= c and float(high) < 2 * c:
        return sums.sub_(c).long().unsqueeze_(1)
    return None


def add_at_maxima(grad: Tensor, at_max: Tensor, share: Tensor, codes: Tensor | None) -> None:
    """Add each row's ``share`` (``[N]``) to ``grad`` at its maxima, split evenly among ties (``amax``).

    Args:
        grad: ``[N, C]`` gradient, updated in place.
        at_max: ``[N, C]`` 0/1 mask of the row maxima in ``grad``'s dtype (may be overwritten).
        share: ``[N]`` per-row totals (may be overwritten).
        codes: the column codes of :func:`maxima_codes`, or ``None`` to add through the mask.
    """
    if codes is not None:
        index = single_maximum_index(at_max, codes)
        if index is not None:
            grad.scatter_add_(1, index, share.unsqueeze(1))
            return
    grad.addcmul_(at_max, share.unsqueeze(1).div_(at_max.sum(dim=1, keepdim=True)))


def add_at_first_maximum(
    grad: Tensor, z: Tensor, zmax: Tensor, share: Tensor, buffer: Tensor, codes: Tensor | None
) -> None:
    """Add each row's ``share`` (``[N]``) to ``grad`` at the first maximum of ``z`` (``Tensor.max``'s index).

    Args:
        grad: ``[N, C]`` gradient, updated in place.
        z: ``[N, C]`` logits.
        zmax: ``[N, 1]`` row maxima of ``z``.
        share: ``[N]`` per-row totals.
        buffer: ``[N, C]`` scratch tensor of ``z``'s dtype for the mask of the maxima (overwritten).
        codes: the column codes of :func:`maxima_codes`, or ``None`` to use ``Tensor.max``'s indices.
    """
    index = None
    if codes is not None:
        index = single_maximum_index(torch.eq(z, zmax, out=buffer), codes)
    if index is None:  # ties (the first maximum), NaN rows, or no codes
        index = z.max(dim=1, keepdim=True).indices
    grad.scatter_add_(1, index, share.unsqueeze(1))
