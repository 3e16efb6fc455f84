"""The row-maximum helpers of the fused kernels (tailwise.functional._maxima) against row-by-row loops."""

from __future__ import annotations

import math

import pytest
import torch

from tailwise.functional._maxima import add_at_first_maximum, add_at_maxima, maxima_codes, single_maximum_index


def _logits(rows: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(21)
    z = torch.randn(64, 37, dtype=torch.float64, generator=g).to(dtype)
    if rows == "ties":
        z[9, 30] = z[9].max()  # a second maximum, after the first
        z[11, 0] = z[11].max()  # a second maximum, before the first
    elif rows == "no maximum":
        z[9, 4] = math.nan  # a NaN row has no position equal to its maximum
    return z


def _split_reference(grad: torch.Tensor, z: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Each row's share split evenly among the positions of its maximum (amax's gradient)."""
    out = grad.clone()
    for i in range(z.shape[0]):
        at = [j for j in range(z.shape[1]) if z[i, j] == z[i].max()]
        for j in at:
            out[i, j] += share[i] / len(at)
    return out


def _first_reference(grad: torch.Tensor, z: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Each row's share at the first position of its maximum (Tensor.max's gradient)."""
    out = grad.clone()
    for i in range(z.shape[0]):
        j = next(j for j in range(z.shape[1]) if z[i, j] == z[i].max())
        out[i, j] += share[i]
    return out


class _ScatterSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = torch.Tensor.scatter_add_

        def spy(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
            self.calls += 1
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "scatter_add_", spy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", ["single", "ties", "no maximum"])
def test_add_at_maxima_by_codes_equals_mask_and_reference(dtype: torch.dtype, rows: str, monkeypatch: pytest.MonkeyPatch) -> None:
    z = _logits(rows, dtype)
    zmax = z.amax(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(3)
    share = torch.rand(64, dtype=dtype, generator=g)
    grad = torch.randn(64, 37, dtype=dtype, generator=g)
    codes = maxima_codes(z)
    assert codes is not None and codes.dtype == dtype
    torch.testing.assert_close(codes, torch.arange(37, 74, dtype=dtype))
    spy = _ScatterSpy(monkeypatch)
    by_codes = grad.clone()
    add_at_maxima(by_codes, torch.eq(z, zmax).to(dtype), share.clone(), codes)
    monkeypatch.undo()
    assert (spy.calls == 1) == (rows == "single")  # a tie or a row without a maximum falls back to the mask
    by_mask = grad.clone()
    add_at_maxima(by_mask, torch.eq(z, zmax).to(dtype), share.clone(), None)
    torch.testing.assert_close(by_codes, by_mask, equal_nan=True)
    keep = torch.arange(64) != 9 if rows == "no maximum" else torch.ones(64, dtype=torch.bool)
    torch.testing.assert_close(by_codes[keep], _split_reference(grad[keep], z[keep], share[keep]))
    if rows == "no maximum":  # the share over no maximum: NaN, as the mask's 0/0
        assert torch.isnan(by_codes[9]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", ["single", "ties", "no maximum"])
def test_add_at_first_maximum_is_tensor_max_gradient(dtype: torch.dtype, rows: str) -> None:
    z = _logits(rows, dtype)
    zmax = z.amax(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(4)
    share = torch.rand(64, dtype=dtype, generator=g)
    grad = torch.randn(64, 37, dtype=dtype, generator=g)
    by_codes = grad.clone()
    add_at_first_maximum(by_codes, z, zmax, share, torch.empty_like(z), maxima_codes(z))
    by_max = grad.clone()
    add_at_first_maximum(by_max, z, zmax, share, torch.empty_like(z), None)
    torch.testing.assert_close(by_codes, by_max)
    # autograd of Tensor.max: the share reaches the returned index only
    leaf = z.clone().requires_grad_(True)
    (leaf.max(dim=1).values * share).sum().backward()
    torch.testing.assert_close(by_codes, grad + leaf.grad)
    if rows != "no maximum":
        torch.testing.assert_close(by_codes, _first_reference(grad, z, share))


def test_single_maximum_index() -> None:
    z = torch.tensor([[0.0, 2.0, 1.0], [5.0, -1.0, 5.0], [1.0, 1.0, 3.0]])
    at_max = torch.eq(z, z.amax(dim=1, keepdim=True)).float()
    codes = maxima_codes(z)
    assert codes is not None
    assert single_maximum_index(at_max, codes) is None  # row 1 has two maxima
    index = single_maximum_index(at_max[[0, 2]], codes)
    assert index is not None and index.dtype == torch.int64
    assert index.tolist() == [[1], [2]]
    assert single_maximum_index(torch.zeros(2, 3), codes) is None  # no maximum at all


def test_maxima_codes_only_where_exact_and_on_the_cpu() -> None:
    assert maxima_codes(torch.empty(2, 5, dtype=torch.float16)) is None  # code sums not exact
    assert maxima_codes(torch.empty(2, 5, dtype=torch.bfloat16)) is None
    assert maxima_codes(torch.empty(2, 5, device="meta")) is None  # elsewhere the test would synchronise
    assert maxima_codes(torch.empty(1, 1).expand(1, 1 << 22)) is None  # float32 sums beyond 2^24
    assert maxima_codes(torch.empty(1, 1).expand(1, (1 << 22) - 1)) is not None
    assert maxima_codes(torch.empty(1, 1, dtype=torch.float64).expand(1, 1 << 22)) is not None
