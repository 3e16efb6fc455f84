"""Small convolutional network for 28x28 images (MNIST, Fashion-MNIST), fast on a CPU.

Two (or more) blocks ``conv3x3 -> batch norm -> ReLU -> 2x2 max-pool`` (32 and 64 channels by default),
then a fully connected layer to ``hidden_dim`` features with ReLU (and optional dropout), then the
classifier head. A LeNet-style model in the spirit of LeCun et al., "Gradient-Based Learning Applied
to Document Recognition" (Proc. IEEE 1998); with the default sizes it has 421,738 parameters (10
classes, one input channel) and reaches about 98.5% test accuracy on MNIST after one epoch of Adam
(lr 1e-3, batch 128).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise._validation import check_int
from tailwise.models._common import (
    FeatureClassifier,
    check_dropout,
    check_int_tuple,
    check_model_args,
    conv_bn_relu_pool,
    hidden_fc,
)
from tailwise.models.heads import HeadName
from tailwise.registry import MODELS

__all__ = ["SmallCNN"]


@MODELS.register("small_cnn")
class SmallCNN(FeatureClassifier):
    """Conv-BN-ReLU-pool blocks, a hidden fully connected layer, then the head.

    Args:
        num_classes: number of classes ``C``.
        in_channels: input channels (1 for MNIST).
        head: ``"linear"`` or ``"normed"`` (cosine head; see :func:`tailwise.models.build_head`).
        input_size: input height and width (an integer for square inputs, or ``(H, W)``); 28 by default.
            Each block halves it (floor), and the result must stay at least 1.
        channels: channels of the convolution blocks (one block per entry).
        hidden_dim: width of the penultimate (feature) layer, ``feature_dim``.
        dropout: dropout probability before the head (0 disables it).

    Attributes:
        feature_dim: ``hidden_dim``.
        classifier: the head mapping ``(N, feature_dim)`` to logits.

    Shapes:
        ``x``: ``(N, in_channels, H, W)`` with ``(H, W) = input_size``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        head: HeadName = "linear",
        input_size: int | Sequence[int] = 28,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_classes, in_channels = check_model_args(num_classes, in_channels, head)
        height, width = check_int_tuple("input_size", input_size, 2)
        chans = check_int_tuple("channels", channels)
        hidden_dim = check_int("hidden_dim", hidden_dim)
        dropout = check_dropout(dropout)
        height, width = height // 2 ** len(chans), width // 2 ** len(chans)
        if height < 1 or width < 1:
            raise ValueError(
                f"input_size must be at least 2**{len(chans)} = {2 ** len(chans)} per side for {len(chans)} "
                f"pooling blocks; got {input_size!r}"
            )
        self.num_classes = num_classes
        self.conv = conv_bn_relu_pool(in_channels, chans, ndim=2)
        self.fc = hidden_fc((chans[-1] if chans else in_channels) * height * width, hidden_dim, dropout)
        self._set_head(head, hidden_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(N, feature_dim)``."""
        return self.fc(self.conv(x))
