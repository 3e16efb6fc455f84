"""Batched pad-crop / flip / normalise augmentation."""

from __future__ import annotations

import pytest
import torch

from tailwise.transforms.augment import BatchAugment


def _images(n: int = 16, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_shape_dtype_and_determinism() -> None:
    aug = BatchAugment((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    x = _images()
    a = aug(x, generator=torch.Generator().manual_seed(1))
    b = aug(x, generator=torch.Generator().manual_seed(1))
    c = aug(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_only_scales_and_normalises() -> None:
    aug = BatchAugment((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    x = _images()
    expected = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.5])[:, None, None]
    torch.testing.assert_close(aug(x, train=False), expected)


def test_flip_correctness() -> None:
    x = _images()
    aug = BatchAugment(padding=0, flip=True, flip_prob=1.0)
    torch.testing.assert_close(aug(x), x.flip(-1).float() / 255)
    keep = BatchAugment(padding=0, flip=True, flip_prob=0.0)
    torch.testing.assert_close(keep(x), x.float() / 255)


def test_mixed_flips_per_sample() -> None:
    x = _images(n=64)
    out = BatchAugment(padding=0, flip=True)(x, generator=torch.Generator().manual_seed(0))
    ref = x.float() / 255
    flipped = torch.isclose(out, ref.flip(-1)).flatten(1).all(1)
    kept = torch.isclose(out, ref).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 10 < int(flipped.sum()) < 54


def test_crop_is_a_zero_filled_shift() -> None:
    x = torch.arange(1, 1 + 2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    aug = BatchAugment(padding=2, flip=False)
    out = aug(x, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6])]
        assert matches, f"sample {i} is not a crop of its padded image"


def test_crop_offsets_vary() -> None:
    x = _images(n=32, c=1)
    out = BatchAugment(padding=4, flip=False)(x, generator=torch.Generator().manual_seed(0))
    same = torch.isclose(out, x.float() / 255).flatten(1).all(1)
    assert int(same.sum()) < 8


def test_one_dimensional_inputs() -> None:
    x = torch.randn(5, 1, 40)
    aug = BatchAugment((0.1,), (2.0,))
    torch.testing.assert_close(aug(x), (x - 0.1) / 2.0)
    shift = BatchAugment(shift=3)
    out = shift(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (3, 3))
    for i in range(5):
        assert any(torch.equal(out[i], padded[i, :, s : s + 40]) for s in range(7))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="give both mean and std"):
        BatchAugment(mean=(0.5,))
    with pytest.raises(ValueError, match="padding must be a non-negative integer; got -1"):
        BatchAugment(padding=-1)
    with pytest.raises(ValueError, match="std must be positive"):
        BatchAugment((0.5,), (0.0,))
    with pytest.raises(ValueError, match=r"x must be a \(N, C, H, W\) or \(N, C, L\) tensor"):
        BatchAugment()(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x has 1 channels but mean/std have 3 entries"):
        BatchAugment((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))(torch.zeros(2, 1, 4, 4))
