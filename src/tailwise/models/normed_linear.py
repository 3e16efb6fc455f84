r"""Cosine classifier head of LDAM-DRW (Cao et al., NeurIPS 2019; ``NormedLinear`` in the official
``models/resnet_cifar.py``).

The logits are the cosines between the feature vector and each class's weight vector:

.. math:: z_{ic} = \frac{h_i}{\lVert h_i \rVert} \cdot \frac{w_c}{\lVert w_c \rVert} \in [-1, 1],

so the LDAM loss multiplies them by a scale :math:`s` (30). There is no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_int

__all__ = ["NormedLinear"]


class NormedLinear(nn.Module):
    r"""Cosine-similarity linear layer: ``normalize(h, dim=-1) @ normalize(W)``.

    With ``transposed_layout=True`` (the default) the weight is stored as ``(in_features, out_features)``
    like the official code, so its state dict loads into this module unchanged; each **column** is a
    class vector. With ``transposed_layout=False`` it is stored ``(out_features, in_features)`` like
    ``nn.Linear`` and each **row** is a class vector. The forward pass is the same function either way.

    Initialisation (official): entries uniform in :math:`[-1, 1]`, then every class vector rescaled to
    unit norm (the official code renormalises each column to norm :math:`10^{-5}` and multiplies by
    :math:`10^{5}`).

    Args:
        in_features: feature dimension ``D``.
        out_features: number of classes ``C``.
        transposed_layout: store the weight as ``(D, C)`` (official) rather than ``(C, D)``.

    Shape:
        input ``(..., D)``, output ``(..., C)`` with values in ``[-1, 1]``.

    Example:
        >>> head = NormedLinear(64, 10)
        >>> head(torch.randn(8, 64)).shape
        torch.Size([8, 10])
    """

    def __init__(self, in_features: int, out_features: int, transposed_layout: bool = True) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        self.transposed_layout = bool(transposed_layout)
        shape = (self.in_features, self.out_features) if self.transposed_layout else (self.out_features, self.in_features)
        self.weight = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    @property
    def _class_dim(self) -> int:
        """The weight dimension that runs over the feature entries of one class vector."""
        return 0 if self.transposed_layout else 1

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Official initialisation: uniform(-1, 1) entries, then unit-norm class vectors.

        Args:
            generator: optional generator for the uniform draw (the global RNG otherwise).
        """
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0, generator=generator)
            self.weight.div_(self.weight.norm(dim=self._class_dim, keepdim=True))

    def forward(self, features: Tensor) -> Tensor:
        """Cosines between ``features`` ``(..., D)`` and the ``C`` class vectors."""
        if features.shape[-1] != self.in_features:
            raise ValueError(
                f"features must have {self.in_features} entries in the last dimension; got shape {tuple(features.shape)}"
            )
        h = F.normalize(features, dim=-1)
        w = F.normalize(self.weight, dim=self._class_dim)
        return h @ w if self.transposed_layout else h @ w.t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, transposed_layout={self.transposed_layout}"
