"""Temperature scaling: fit_temperature and TemperatureScaler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from tailwise.metrics import TemperatureScaler, expected_calibration_error, fit_temperature


def _calibrated(n: int = 20_000, c: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a calibrated model: labels drawn from softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 2.0
    y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, y


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_recovers_known_temperature_and_improves_calibration(factor: float) -> None:
    logits, y = _calibrated()
    scaled = logits * factor  # over-confident (factor > 1) or under-confident (< 1) copy
    t = fit_temperature(scaled, y)
    assert t == pytest.approx(factor, rel=0.05)
    nll_before = F.cross_entropy(scaled, y)
    nll_after = F.cross_entropy(scaled / t, y)
    assert nll_after < nll_before
    ece_before = expected_calibration_error(scaled, y, input="logits")
    ece_after = expected_calibration_error(scaled / t, y, input="logits")
    assert ece_after < ece_before and ece_after < 0.02


def test_matches_scalar_minimiser_and_is_deterministic() -> None:
    logits, y = _calibrated(n=3000, c=5, seed=1)
    z = logits * 2.2 + 0.3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    ref = math.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x)
    t1 = fit_temperature(z, y)
    t2 = fit_temperature(z, y)
    assert t1 == t2
    assert t1 == pytest.approx(ref, rel=1e-5)
    # insensitive to the starting point
    assert fit_temperature(z, y, init=0.3) == pytest.approx(t1, rel=1e-6)


def test_float32_input() -> None:
    logits, y = _calibrated(n=4000, c=6, seed=4)
    t32 = fit_temperature((logits * 3).float(), y)
    t64 = fit_temperature(logits * 3, y)
    assert t32 == pytest.approx(t64, rel=1e-4)


def test_scaler_module() -> None:
    logits, y = _calibrated(n=5000, c=4, seed=5)
    scaler = TemperatureScaler()
    x = (logits * 2.5).float()
    torch.testing.assert_close(scaler(x), x)  # identity before fit
    assert scaler.fit(x, y) is scaler
    t = float(scaler.temperature)
    assert t == pytest.approx(fit_temperature(x, y))
    out = scaler(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x / t)
    assert torch.equal(out.argmax(1), x.argmax(1))  # accuracy unchanged
    other = TemperatureScaler()
    other.load_state_dict(scaler.state_dict())
    assert float(other.temperature) == t
    assert "temperature=" in repr(other)


def test_bad_inputs() -> None:
    logits, y = _calibrated(n=20, c=3)
    with pytest.raises(ValueError, match="init must be a finite number > 0"):
        fit_temperature(logits, y, init=0.0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        fit_temperature(logits, y, max_iter=0)
    with pytest.raises(ValueError, match="target_val must have shape"):
        fit_temperature(logits, y[:5])
    with pytest.raises(ValueError, match=r"target_val labels must lie in \[0, 2\]"):
        fit_temperature(logits, torch.full((20,), 5))
    with pytest.raises(ValueError, match="logits_val must be finite"):
        fit_temperature(torch.full((2, 3), float("inf")), y[:2])
    with pytest.raises(ValueError, match="at least one sample"):
        fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        TemperatureScaler(temperature=-1.0)
    assert np.isfinite(fit_temperature(logits, y, max_iter=1))
