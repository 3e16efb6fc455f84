"""Multi-layer perceptron on flattened inputs of any shape.

``flatten -> [Linear -> (BatchNorm) -> ReLU -> (Dropout)] x depth -> head``. The standard small model of
the label-noise and memorisation literature (e.g. Zhang et al., "Understanding Deep Learning Requires
Rethinking Generalization", ICLR 2017) and a fast baseline for MNIST-1D and tabular inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from tailwise._validation import check_int
from tailwise.models._common import FeatureClassifier, check_dropout, check_int_tuple, check_model_args
from tailwise.models.heads import HeadName
from tailwise.registry import MODELS

__all__ = ["MLP"]


@MODELS.register("mlp")
class MLP(FeatureClassifier):
    """Fully connected network on ``x.flatten(1)``.

    Args:
        num_classes: number of classes ``C``.
        in_channels: input channels; only used for the default ``input_dim`` (``in_channels * 28 * 28``).
        head: ``"linear"`` or ``"normed"`` (cosine head; see :func:`tailwise.models.build_head`).
        input_dim: features per sample after flattening: an integer, or the per-sample shape (channels
            included) whose product is taken, e.g. ``(1, 40)`` for MNIST-1D or ``(3, 32, 32)`` for CIFAR.
            Defaults to ``in_channels * 28 * 28``.
        hidden_dims: widths of the hidden layers, or one width repeated ``depth`` times. An empty
            sequence gives a linear model on the raw inputs (``feature_dim = input_dim``).
        depth: number of hidden layers when ``hidden_dims`` is a single integer (default 2).
        batch_norm: insert ``BatchNorm1d`` after each hidden linear layer.
        dropout: dropout probability after each hidden activation (0 disables it).

    Attributes:
        feature_dim: width of the last hidden layer.
        classifier: the head mapping ``(N, feature_dim)`` to logits.

    Shapes:
        ``x``: ``(N, *)`` with ``input_dim`` elements per sample.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        head: HeadName = "linear",
        input_dim: int | Sequence[int] | None = None,
        hidden_dims: int | Sequence[int] = (256, 256),
        depth: int | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_classes, in_channels = check_model_args(num_classes, in_channels, head)
        if input_dim is None:
            flat = in_channels * 28 * 28
        else:
            flat = math.prod(check_int_tuple("input_dim", input_dim))
        if isinstance(hidden_dims, Sequence) and not isinstance(hidden_dims, str):
            if depth is not None:
                raise ValueError(f"depth must be None when hidden_dims is a sequence; got depth={depth!r}")
            widths = check_int_tuple("hidden_dims", hidden_dims) if len(hidden_dims) else ()
        else:
            layers = 2 if depth is None else check_int("depth", depth, minimum=0)
            widths = check_int_tuple("hidden_dims", hidden_dims, layers) if layers else ()
        dropout = check_dropout(dropout)
        body: list[nn.Module] = [nn.Flatten(1)]
        prev = flat
        for width in widths:
            body.append(nn.Linear(prev, width, bias=not batch_norm))
            if batch_norm:
                body.append(nn.BatchNorm1d(width))
            body.append(nn.ReLU(inplace=True))
            if dropout > 0:
                body.append(nn.Dropout(dropout))
            prev = width
        self.num_classes = num_classes
        self.input_dim = flat
        self.body = nn.Sequential(*body)
        self._set_head(head, prev, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(N, feature_dim)`` (the flattened input when there is no hidden layer)."""
        if x.ndim < 1 or x[0].numel() != self.input_dim:
            raise ValueError(
                f"x must have input_dim = {self.input_dim} elements per sample; got shape {tuple(x.shape)}"
            )
        return self.body(x)
