"""Shared pieces of the reference models: argument checks, building blocks and the feature/classifier base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_int, check_probability, describe
from tailwise.models.heads import HEADS, HeadName, build_head


def check_int_tuple(name: str, value: Any, length: int | None = None, *, minimum: int = 1) -> tuple[int, ...]:
    """Validate an integer or a sequence of integers (each ``>= minimum``) and return a tuple.

    A single integer is broadcast to ``length`` entries when ``length`` is given.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (check_int(name, value, minimum=minimum),) * (length or 1)
    if not isinstance(value, Sequence) or isinstance(value, str):
        expected = f"an integer or a sequence of {length} integers" if length else "an integer or a sequence of integers"
        raise TypeError(f"{name} must be {expected}; got {describe(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries; got {len(value)} ({value!r})")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))


def check_model_args(num_classes: Any, in_channels: Any, head: Any) -> tuple[int, int]:
    """Validate the arguments every reference model takes; return ``(num_classes, in_channels)``."""
    num_classes = check_int("num_classes", num_classes)
    in_channels = check_int("in_channels", in_channels)
    check_in_choices("head", head, HEADS)
    return num_classes, in_channels


def check_dropout(dropout: float) -> float:
    """Validate a dropout probability in ``[0, 1)``."""
    dropout = check_probability("dropout", dropout)
    if dropout == 1.0:
        raise ValueError(f"dropout must lie in [0, 1); got {dropout!r}")
    return dropout


_CONV_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


def conv_bn_relu_pool(in_channels: int, channels: Sequence[int], ndim: int) -> nn.Sequential:
    """Blocks ``conv(k=3, padding=1, no bias) -> batch norm -> ReLU -> max-pool(2)``, one per entry of ``channels``.

    ``ndim`` is the number of spatial dimensions (1: sequences, 2: images).
    """
    conv, norm, pool = _CONV_LAYERS[ndim]
    blocks: list[nn.Module] = []
    prev = in_channels
    for c in channels:
        blocks += [conv(prev, c, kernel_size=3, padding=1, bias=False), norm(c), nn.ReLU(inplace=True), pool(2)]
        prev = c
    return nn.Sequential(*blocks)


def hidden_fc(in_features: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """``flatten -> Linear(in_features, hidden_dim) -> ReLU -> Dropout(dropout)``: the penultimate layer."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(in_features, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


class FeatureClassifier(nn.Module):
    """Base of the reference models: ``forward(x) = classifier(features(x))``.

    A subclass builds its feature layers, then calls :meth:`_set_head` (last, so that the parameters
    are created in the order of the forward pass), and implements :meth:`features`.
    """

    feature_dim: int
    classifier: nn.Module

    def _set_head(self, head: HeadName, feature_dim: int, num_classes: int) -> None:
        """Set ``feature_dim`` and build the ``classifier`` head mapping ``feature_dim`` features to logits."""
        self.feature_dim = feature_dim
        self.classifier = build_head(head, feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Penultimate features ``(N, feature_dim)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` = ``classifier(features(x))``."""
        return self.classifier(self.features(x))
