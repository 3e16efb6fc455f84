"""Batched on-device augmentation: ``uint8`` -> float, random pad-crop, random horizontal flip, normalise.

The standard CIFAR recipe (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
``Normalize(mean, std)``) applied to a whole batch at once on the batch's device, so that the data can
stay resident on the GPU. Each sample gets its own crop offset and flip, drawn from an explicit
``torch.Generator``. Crop and flip are one ``gather`` with per-sample index arithmetic; no Python loop
over samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tailwise._validation import describe

__all__ = ["BatchAugment"]


def _draw(shape: tuple[int, ...], high: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Integers in ``[0, high)`` drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, shape, generator=generator, device=gen_device).to(device)


class BatchAugment(nn.Module):
    """Batched augmentation for ``(N, C, H, W)`` images and ``(N, C, L)`` signals.

    With ``train=True``: scale ``uint8`` inputs to [0, 1]; zero-pad by ``padding`` and take a random
    ``H x W`` crop per sample (equivalently, shift each image by an offset in ``[-padding, padding]`` on
    both axes, filling with zeros, which is black before normalisation); flip each image left-right
    with probability ``flip_prob``; subtract ``mean`` and divide by ``std`` per channel. 1-D signals
    ``(N, C, L)`` get an optional random zero-filled shift of up to ``shift`` positions (default 0) and
    no flip. With ``train=False`` only the scaling and normalisation are applied.

    Args:
        mean: per-channel mean (of inputs in [0, 1]), or None for no normalisation.
        std: per-channel standard deviation, or None.
        padding: pad-crop padding for images (0 turns cropping off; CIFAR uses 4).
        flip: random horizontal flips for images.
        flip_prob: probability of a flip.
        shift: largest random shift for 1-D signals (0: none).
        dtype: output floating dtype.

    Example:
        >>> aug = BatchAugment((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> aug(x, generator=g).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 4,
        flip: bool = True,
        flip_prob: float = 0.5,
        shift: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError(f"give both mean and std or neither; got mean={mean!r}, std={std!r}")
        for name, value in (("padding", padding), ("shift", shift)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1]; got {flip_prob!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.flip_prob = float(flip_prob)
        self.shift = int(shift)
        self.dtype = dtype
        if mean is not None and std is not None:
            m = torch.as_tensor(list(mean), dtype=torch.float64).flatten()
            s = torch.as_tensor(list(std), dtype=torch.float64).flatten()
            if m.shape != s.shape or m.numel() == 0:
                raise ValueError(f"mean and std must have one entry per channel; got {m.numel()} and {s.numel()} entries")
            if bool((s <= 0).any()):
                raise ValueError(f"std must be positive; got {s.tolist()}")
            self.register_buffer("mean", m.to(torch.float32), persistent=False)
            self.register_buffer("std", s.to(torch.float32), persistent=False)
        else:
            self.register_buffer("mean", None, persistent=False)
            self.register_buffer("std", None, persistent=False)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip={self.flip}, flip_prob={self.flip_prob}, shift={self.shift}"

    def _normalise(self, x: Tensor) -> Tensor:
        """Scale ``uint8`` to [0, 1] and normalise per channel, in one affine map."""
        c = x.shape[1]
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        out = x.to(self.dtype)
        view = (1, c) + (1,) * (x.ndim - 2)
        if self.mean is None or self.std is None:
            return out * scale if scale != 1.0 else out
        if self.mean.numel() not in (1, c):
            raise ValueError(f"x has {c} channels but mean/std have {self.mean.numel()} entries")
        mean = self.mean.to(device=x.device, dtype=self.dtype)
        std = self.std.to(device=x.device, dtype=self.dtype)
        mul = (scale / std).expand(c).reshape(view)
        add = (-mean / std).expand(c).reshape(view)
        return torch.addcmul(add, out, mul)

    def _crop_flip_2d(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, c, h, w = x.shape
        p = self.padding
        if n == 0 or (p == 0 and not self.flip):
            return x
        dev = x.device
        if p > 0:
            oy = _draw((n,), 2 * p + 1, generator, dev)
            ox = _draw((n,), 2 * p + 1, generator, dev)
            src = F.pad(x, (p, p, p, p))
        else:
            oy = torch.zeros(n, dtype=torch.int64, device=dev)
            ox = torch.zeros(n, dtype=torch.int64, device=dev)
            src = x
        rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h) rows in the padded image
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            gen_device = generator.device if generator is not None else dev
            flipped = (torch.rand(n, generator=generator, device=gen_device) < self.flip_prob).to(dev)
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        cols = ox[:, None] + cols  # (n, w)
        wp = src.shape[-1]
        flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        return torch.gather(src.reshape(n, c, -1), 2, flat).reshape(n, c, h, w)

    def _shift_1d(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, c, length = x.shape
        s = self.shift
        if n == 0 or s == 0:
            return x
        dev = x.device
        off = _draw((n,), 2 * s + 1, generator, dev)
        src = F.pad(x, (s, s))
        pos = (off[:, None] + torch.arange(length, device=dev)).reshape(n, 1, length).expand(n, c, length)
        return torch.gather(src, 2, pos)

    def forward(self, x: Tensor, generator: torch.Generator | None = None, train: bool = True) -> Tensor:
        """Augment (``train=True``) or only convert and normalise (``train=False``) a batch.

        Args:
            x: ``(N, C, H, W)`` images or ``(N, C, L)`` signals, ``uint8`` (scaled by 1/255) or float.
            generator: source of the random offsets and flips (on the CPU or on ``x``'s device); None
                uses the global generator.
            train: apply the random parts.

        Returns:
            A tensor of ``dtype`` with the shape of ``x``, on ``x``'s device.
        """
        if not isinstance(x, Tensor) or x.ndim not in (3, 4):
            raise ValueError(f"x must be a (N, C, H, W) or (N, C, L) tensor; got {describe(x)}")
        if train:
            x = self._crop_flip_2d(x, generator) if x.ndim == 4 else self._shift_1d(x, generator)
        return self._normalise(x)
