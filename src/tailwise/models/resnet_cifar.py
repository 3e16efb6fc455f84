"""ResNet for 32x32 inputs (CIFAR): ResNet-20/32/44/56/110 with option-A shortcuts.

The architecture of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), §4.2, as
re-implemented by Y. Idelbayev (``resnet_cifar.py``) and used unchanged by LDAM-DRW (Cao et al.,
"Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019) and its forks
(VS loss, Prior-LT/UniMix, ABSGD):

- a 3x3 convolution to 16 channels, batch norm, ReLU;
- three stages of ``n = (depth - 2) / 6`` basic blocks with 16, 32 and 64 channels; the first block of
  stages 2 and 3 has stride 2;
- global average pooling to 64 features, then the classifier head.

A basic block is ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``. Where the shape changes,
the **option-A** shortcut takes every second pixel (``x[:, :, ::2, ::2]``) and zero-pads the channels
(``planes // 4`` on each side), so it has no parameters; option B (1x1 convolution + batch norm) is
offered by name. Convolution and linear weights get Kaiming-normal init (``fan_in``, ReLU gain), as in
the LDAM-DRW code; the cosine head keeps its own init. ResNet-32 has 464,154 parameters with a linear
head for 10 classes.

The sub-module names (``conv1``, ``bn1``, ``layer1..3``, and ``conv1/bn1/conv2/bn2`` in each block)
follow the reference code, so a LDAM-DRW checkpoint loads after renaming ``linear.*`` to
``classifier.*``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_int
from tailwise.models._common import FeatureClassifier, check_model_args
from tailwise.models.heads import HeadName
from tailwise.registry import MODELS

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]

Shortcut = Literal["A", "B"]


class _ZeroPadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channels appended on both sides."""

    def __init__(self, stride: int, pad_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_channels = pad_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_channels, self.pad_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad_channels}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual shortcut (He et al., 2016).

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first convolution (and of the shortcut).
        shortcut: ``"A"`` (parameter-free subsample + zero-pad, the CIFAR ResNet of the paper) or
            ``"B"`` (1x1 convolution + batch norm) where the shape changes.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A") -> None:
        super().__init__()
        check_in_choices("shortcut", shortcut, ("A", "B"))
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                if planes - in_planes != 2 * (planes // 4):
                    raise ValueError(
                        f"shortcut 'A' pads planes // 4 channels on each side, so planes must equal "
                        f"in_planes + 2 * (planes // 4); got in_planes={in_planes}, planes={planes}"
                    )
                self.shortcut = _ZeroPadShortcut(stride, planes // 4)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register("resnet_cifar")
class CifarResNet(FeatureClassifier):
    """CIFAR ResNet of depth ``6n + 2`` (He et al., 2016, §4.2; Idelbayev's code as used by LDAM-DRW).

    Args:
        depth: ``6n + 2`` layers: 20, 32 (the long-tail benchmark model), 44, 56, 110, ...
        num_classes: number of classes ``C``.
        in_channels: input channels (3 for RGB).
        head: ``"linear"`` or ``"normed"`` (the cosine head of LDAM; see :func:`build_head`).
        shortcut: ``"A"`` (zero-pad, default, as in the reference code) or ``"B"`` (1x1 conv + BN).
        widths: channels of the three stages (default ``(16, 32, 64)``). Option A needs each width to
            be twice the previous one.

    Attributes:
        feature_dim: width of :meth:`features` (the last stage's channels, 64 by default).
        classifier: the head mapping ``(N, feature_dim)`` to logits.

    Shapes:
        ``x``: ``(N, in_channels, H, W)`` (32x32 for CIFAR; any size works thanks to global pooling).
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        in_channels: int = 3,
        head: HeadName = "linear",
        shortcut: Shortcut = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth, minimum=8)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...); got {depth}")
        num_classes, in_channels = check_model_args(num_classes, in_channels, head)
        check_in_choices("shortcut", shortcut, ("A", "B"))
        if len(widths) != 3:
            raise ValueError(f"widths must have 3 entries (one per stage); got {widths!r}")
        w1, w2, w3 = (check_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        blocks = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, w1, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.layer1 = self._make_stage(w1, w1, blocks, 1, shortcut)
        self.layer2 = self._make_stage(w1, w2, blocks, 2, shortcut)
        self.layer3 = self._make_stage(w2, w3, blocks, 2, shortcut)
        self._set_head(head, w3, num_classes)
        self.apply(_kaiming_init)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: Shortcut) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride, shortcut)]
        layers += [BasicBlock(planes, planes, 1, shortcut) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features: global-average-pooled last stage, shape ``(N, feature_dim)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal init of convolution and linear weights (the LDAM-DRW ``_weights_init``)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(module.weight)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, head: HeadName = "linear", shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-20 for CIFAR (3 x 3 basic blocks, ~0.27M parameters). See :class:`CifarResNet`."""
    return CifarResNet(20, num_classes, in_channels, head, shortcut)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3, head: HeadName = "linear", shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-32 for CIFAR, the model of the LDAM-DRW long-tail benchmarks (3 x 5 basic blocks).

    464,154 parameters with a linear head for 10 classes. ``head="normed"`` gives LDAM's
    ``use_norm=True`` model (cosine head). See :class:`CifarResNet`.
    """
    return CifarResNet(32, num_classes, in_channels, head, shortcut)


@MODELS.register("resnet44")
def resnet44(num_classes: int = 10, in_channels: int = 3, head: HeadName = "linear", shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-44 for CIFAR (3 x 7 basic blocks). See :class:`CifarResNet`."""
    return CifarResNet(44, num_classes, in_channels, head, shortcut)


@MODELS.register("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3, head: HeadName = "linear", shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-56 for CIFAR (3 x 9 basic blocks). See :class:`CifarResNet`."""
    return CifarResNet(56, num_classes, in_channels, head, shortcut)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 10, in_channels: int = 3, head: HeadName = "linear", shortcut: Shortcut = "A") -> CifarResNet:
    """ResNet-110 for CIFAR (3 x 18 basic blocks, ~1.7M parameters). See :class:`CifarResNet`."""
    return CifarResNet(110, num_classes, in_channels, head, shortcut)
