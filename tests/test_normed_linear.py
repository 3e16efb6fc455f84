"""NormedLinear: cosine logits, both weight layouts, official init, shapes, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailwise.models import NormedLinear


def test_official_layout_and_init() -> None:
    head = NormedLinear(16, 5)
    assert head.weight.shape == (16, 5)
    torch.testing.assert_close(head.weight.norm(dim=0), torch.ones(5))
    assert float(head.weight.detach().abs().max()) <= 1.0
    other = NormedLinear(16, 5, transposed_layout=False)
    assert other.weight.shape == (5, 16)
    torch.testing.assert_close(other.weight.norm(dim=1), torch.ones(5))


def test_forward_is_cosine_in_both_layouts() -> None:
    torch.manual_seed(0)
    h = torch.randn(7, 16, dtype=torch.float64)
    a = NormedLinear(16, 5).double()
    b = NormedLinear(16, 5, transposed_layout=False).double()
    with torch.no_grad():
        b.weight.copy_(a.weight.t() * 3.0)  # scale does not matter
    ref = F.normalize(h, dim=1) @ F.normalize(a.weight, dim=0)
    torch.testing.assert_close(a(h), ref)
    torch.testing.assert_close(b(h), ref)
    assert float(a(h).detach().abs().max()) <= 1.0 + 1e-12
    assert a(torch.randn(2, 3, 16, dtype=torch.float64)).shape == (2, 3, 5)


def test_gradcheck_and_generator_init() -> None:
    head = NormedLinear(6, 3).double()
    h = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: F.normalize(x, dim=1) @ F.normalize(w, dim=0), (h, head.weight))
    assert torch.autograd.gradcheck(head, (h,))
    a, b = NormedLinear(6, 3), NormedLinear(6, 3)
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight)


def test_state_dict_round_trip() -> None:
    a, b = NormedLinear(8, 4), NormedLinear(8, 4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weight, b.weight)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="in_features must be an integer >= 1"):
        NormedLinear(0, 3)
    with pytest.raises(TypeError, match="out_features must be an integer"):
        NormedLinear(4, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features must have 8 entries in the last dimension"):
        NormedLinear(8, 4)(torch.randn(2, 7))
