"""Randomized smoothing: Monte-Carlo prediction and l2 certification (Cohen et al., ICML 2019).

The smoothed classifier of a base classifier ``f`` at noise level ``σ`` is

.. math::

    g(x) = \\arg\\max_c \\; P_{\\delta \\sim N(0, \\sigma^2 I)}\\big(f(x + \\delta) = c\\big).

If the top class ``c_A`` has probability at least ``p_A > 1/2``, ``g`` is constant on the l2 ball of
radius ``R = σ Φ^{-1}(p_A)`` around ``x`` (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness
via Randomized Smoothing", ICML 2019, Theorem 1). The algorithms below are those of the paper (and of
its official ``core.py``):

* **CERTIFY**\\ (x; n0, n, α): count the base predictions on ``n0`` noisy copies and take the candidate
  ``ĉ_A = argmax`` (first index on ties); count ``n`` fresh copies, ``n_A`` = count of ``ĉ_A``; the
  one-sided ``(1 − α)`` Clopper–Pearson lower bound is ``p̲_A = Beta^{-1}(α; n_A, n − n_A + 1)`` (0 when
  ``n_A = 0``); abstain (``ABSTAIN = -1``, radius 0) when ``p̲_A < 1/2``, else return ``ĉ_A`` with
  radius ``σ Φ^{-1}(p̲_A)``.
* **PREDICT**\\ (x; n, α): top-2 counts ``n_1 ≥ n_2``; abstain when the two-sided exact binomial test of
  ``n_1`` successes in ``n_1 + n_2`` trials at ``p = 1/2`` has p-value ``> α``.

The count-level functions (:func:`certify_from_counts`, :func:`predict_from_counts`,
:func:`lower_confidence_bound`) are pure and need no model. They use SciPy (the ``stats`` extra), which
is imported lazily.

Because ``p̲_A ≤ α^{1/n}`` even when every sample votes for ``ĉ_A``, no radius above
:func:`max_certifiable_radius` ``= σ Φ^{-1}(α^{1/n})`` can ever be certified (``≈ 3.81σ`` for
``n = 100 000``, ``α = 0.001``); :func:`certified_accuracy` warns when asked about larger radii.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_int, check_positive, check_probability, describe

__all__ = [
    "ABSTAIN",
    "CountCertificate",
    "CountPrediction",
    "Smooth",
    "average_certified_radius",
    "certified_accuracy",
    "certify_from_counts",
    "lower_confidence_bound",
    "max_certifiable_radius",
    "normal_ppf",
    "plot_certified_accuracy",
    "predict_from_counts",
    "round_significant",
    "warn_if_uncertifiable",
]

ABSTAIN: int = -1
"""The label returned when the smoothed classifier abstains."""


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError as err:  # pragma: no cover - exercised only without scipy
        raise ImportError(
            "randomized-smoothing statistics need SciPy; install it with `pip install tailwise[stats]`"
        ) from err
    return stats


def _check_count(name: str, value: Any, *, allow_zero: bool = True) -> int:
    """:func:`check_int` (``>= 0``, or ``>= 1`` without ``allow_zero``) that also accepts a one-element integer tensor."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    return check_int(name, value, minimum=0 if allow_zero else 1)


def _check_alpha(alpha: float) -> float:
    a = check_probability("alpha", alpha, closed=False)
    return a


def _counts_array(name: str, counts: Any) -> np.ndarray:
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu().numpy()
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector of per-class counts; got {describe(arr)}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold whole-number counts; got {arr.tolist()}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer counts; got {describe(arr)}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative; got {arr.tolist()}")
    return arr.astype(np.int64)


def normal_ppf(p: float | Tensor | np.ndarray) -> Any:
    """Standard normal quantile ``Φ^{-1}(p)`` (SciPy's ``norm.ppf``).

    Args:
        p: probability or array of probabilities in [0, 1].

    Returns:
        A float for scalar input, otherwise a NumPy array.
    """
    stats = _scipy_stats()
    if isinstance(p, Tensor):
        p = p.detach().cpu().numpy()
    out = stats.norm.ppf(p)
    return float(out) if np.ndim(out) == 0 else out


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided ``(1 − α)`` Clopper–Pearson lower confidence bound on a binomial proportion.

    .. math:: \\underline{p}_A = \\mathrm{Beta}^{-1}(\\alpha;\\, n_A,\\, n - n_A + 1), \\qquad
              \\underline{p}_A = 0 \\text{ when } n_A = 0.

    This equals statsmodels' ``proportion_confint(n_A, n, alpha=2α, method="beta")[0]`` used by Cohen
    et al.

    Args:
        n_a: number of successes ``n_A`` (votes for the candidate class), ``0 ≤ n_A ≤ n``.
        n: number of trials.
        alpha: failure probability in (0, 1).

    Returns:
        The lower bound as a Python float.
    """
    n = _check_count("n", n, allow_zero=False)
    n_a = _check_count("n_a", n_a)
    if n_a > n:
        raise ValueError(f"n_a must be at most n ({n}); got {n_a}")
    alpha = _check_alpha(alpha)
    if n_a == 0:
        return 0.0
    return float(_scipy_stats().beta.ppf(alpha, n_a, n - n_a + 1))


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples: ``σ Φ^{-1}(α^{1/n})``.

    Reached when all ``n`` samples vote for the candidate (``p̲_A = α^{1/n}``).

    Args:
        n: number of estimation samples.
        alpha: failure probability in (0, 1).
        sigma: noise standard deviation ``σ > 0``.
    """
    n = _check_count("n", n, allow_zero=False)
    alpha = _check_alpha(alpha)
    sigma = check_positive("sigma", sigma)
    p = alpha ** (1.0 / n)
    if p < 0.5:
        return 0.0
    return sigma * float(normal_ppf(p))


def warn_if_uncertifiable(radius: float | Sequence[float], n: int, alpha: float, sigma: float) -> bool:
    """Warn (``UserWarning``) when a requested radius exceeds :func:`max_certifiable_radius`.

    Returns:
        ``True`` when a warning was issued.
    """
    r_max = max_certifiable_radius(n, alpha, sigma)
    radii = np.atleast_1d(np.asarray(radius, dtype=np.float64))
    too_big = radii[radii > r_max]
    if too_big.size:
        warnings.warn(
            f"radius {too_big.tolist()} exceeds the largest certifiable radius σ·Φ⁻¹(α^(1/n)) = {r_max:.4g} "
            f"(σ={sigma}, n={n}, α={alpha}); certified accuracy there is 0 by construction. Use a larger n.",
            UserWarning,
            stacklevel=2,
        )
        return True
    return False


class CountCertificate(NamedTuple):
    """Result of :func:`certify_from_counts`."""

    prediction: int
    """the certified class, or :data:`ABSTAIN`"""
    radius: float
    """the certified l2 radius (0.0 on abstention)"""
    p_lower: float
    """the Clopper–Pearson lower bound ``p̲_A``"""
    count: int
    """``n_A``: estimation votes for the selected class"""


class CountPrediction(NamedTuple):
    """Result of :func:`predict_from_counts`."""

    prediction: int
    """the top class, or :data:`ABSTAIN`"""
    pvalue: float
    """two-sided binomial-test p-value of top-1 vs top-2 counts"""


def certify_from_counts(
    counts_selection: Any, counts_estimation: Any, n: int | None, alpha: float, sigma: float
) -> CountCertificate:
    """CERTIFY of Cohen et al. from the two vectors of class counts.

    Args:
        counts_selection: per-class votes of the ``n0`` selection samples; the candidate is its argmax
            (the first index wins ties, as ``numpy.argmax``).
        counts_estimation: per-class votes of the ``n`` estimation samples.
        n: number of estimation samples; ``None`` uses ``counts_estimation.sum()``.
        alpha: failure probability in (0, 1).
        sigma: noise standard deviation ``σ``.

    Returns:
        ``CountCertificate(prediction, radius, p_lower, count)``: ``(ABSTAIN, 0.0, ...)`` when
        ``p̲_A < 1/2``, else ``(ĉ_A, σ Φ^{-1}(p̲_A), p̲_A, n_A)``.
    """
    sel = _counts_array("counts_selection", counts_selection)
    est = _counts_array("counts_estimation", counts_estimation)
    if sel.shape != est.shape:
        raise ValueError(
            f"counts_estimation must have the shape of counts_selection {sel.shape}; got shape {est.shape}"
        )
    total = int(est.sum())
    n = total if n is None else _check_count("n", n, allow_zero=False)
    if total > n:
        raise ValueError(f"counts_estimation must sum to at most n ({n}); got a sum of {total}")
    sigma = check_positive("sigma", sigma)
    c_hat = int(np.argmax(sel))
    n_a = int(est[c_hat])
    p_lower = lower_confidence_bound(n_a, n, alpha)
    if p_lower < 0.5:
        return CountCertificate(ABSTAIN, 0.0, p_lower, n_a)
    return CountCertificate(c_hat, sigma * float(normal_ppf(p_lower)), p_lower, n_a)


def predict_from_counts(counts: Any, alpha: float) -> CountPrediction:
    """PREDICT of Cohen et al. from one vector of class counts.

    The two largest counts ``n_1 ≥ n_2`` enter a two-sided exact binomial test of ``n_1`` successes in
    ``n_1 + n_2`` trials at ``p = 1/2`` (``scipy.stats.binomtest``); the smoothed classifier abstains when
    the p-value exceeds ``α`` (so it errs with probability at most ``α``).

    Args:
        counts: per-class votes (at least two classes).
        alpha: significance level in (0, 1).

    Returns:
        ``CountPrediction(prediction, pvalue)``.
    """
    arr = _counts_array("counts", counts)
    if arr.size < 2:
        raise ValueError(f"counts must have at least 2 classes; got {arr.size}")
    alpha = _check_alpha(alpha)
    order = np.argsort(-arr, kind="stable")
    top, second = int(order[0]), int(order[1])
    n1, n2 = int(arr[top]), int(arr[second])
    if n1 + n2 == 0:
        return CountPrediction(ABSTAIN, 1.0)
    pvalue = float(_scipy_stats().binomtest(n1, n1 + n2, 0.5).pvalue)
    return CountPrediction(ABSTAIN if pvalue > alpha else top, pvalue)


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


class Smooth:
    """The smoothed classifier ``g`` of a base classifier ``f`` under Gaussian noise ``N(0, σ² I)``.

    Mirrors Cohen et al.'s ``Smooth`` class (ICML 2019). Noise is drawn in batches of ``batch_size``
    copies on the model's device from the explicit ``generator`` (which must live on that device);
    class votes are accumulated on the device and read back once per call.

    Args:
        base_classifier: maps a batch ``[B, *x.shape]`` to logits ``[B, num_classes]``. It is put in
            eval mode during sampling and restored to its previous mode afterwards.
        num_classes: number of classes.
        sigma: noise standard deviation ``σ > 0`` (in the input space of ``base_classifier``; Cohen et
            al. keep inputs in [0, 1] and normalise inside the model).

    Example:
        >>> smooth = Smooth(model, num_classes=10, sigma=0.25)
        >>> g = torch.Generator().manual_seed(0)
        >>> label, radius = smooth.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, generator=g)
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float) -> None:
        if not callable(base_classifier):
            raise TypeError(f"base_classifier must be a callable nn.Module; got {describe(base_classifier)}")
        self.base_classifier = base_classifier
        self.num_classes = _check_count("num_classes", num_classes, allow_zero=False)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {self.num_classes}")
        self.sigma = check_positive("sigma", sigma)

    def certify(
        self,
        x: Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """Monte-Carlo certification (CERTIFY of Cohen et al.).

        Args:
            x: one input, without batch dimension.
            n0: number of selection samples.
            n: number of estimation samples.
            alpha: failure probability; the certificate is wrong with probability at most ``α``.
            batch_size: noisy copies per forward pass.
            generator: random generator on the model's device (``None``: the global one).

        Returns:
            ``(prediction, radius)``; ``(ABSTAIN, 0.0)`` when ``p̲_A < 1/2``.
        """
        n0 = _check_count("n0", n0, allow_zero=False)
        n = _check_count("n", n, allow_zero=False)
        alpha = _check_alpha(alpha)
        sel = self.sample_counts(x, n0, batch_size, generator)
        est = self.sample_counts(x, n, batch_size, generator)
        cert = certify_from_counts(sel, est, n, alpha, self.sigma)
        return cert.prediction, cert.radius

    def predict(
        self,
        x: Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """Monte-Carlo prediction (PREDICT of Cohen et al.); returns the class or :data:`ABSTAIN`."""
        n = _check_count("n", n, allow_zero=False)
        alpha = _check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size, generator)
        return predict_from_counts(counts, alpha).prediction

    @torch.no_grad()
    def sample_counts(
        self, x: Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """Votes of the base classifier on ``num`` noisy copies ``x + δ``, ``δ ~ N(0, σ² I)``.

        Returns:
            int64 NumPy array of length ``num_classes``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor (one input without batch dimension); got {describe(x)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
        num = _check_count("num", num, allow_zero=False)
        batch_size = _check_count("batch_size", batch_size, allow_zero=False)
        model = self.base_classifier
        device = _model_device(model, x.device) if isinstance(model, nn.Module) else x.device
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator must live on the model's device ({device}); got a generator on {generator.device}"
            )
        x = x.to(device)
        was_training = bool(getattr(model, "training", False))
        if isinstance(model, nn.Module):
            model.eval()
        counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        try:
            remaining = num
            while remaining > 0:
                this = min(batch_size, remaining)
                remaining -= this
                batch = x.unsqueeze(0).expand(this, *x.shape)
                noise = torch.randn(batch.shape, generator=generator, device=device, dtype=x.dtype)
                logits = model(batch + noise * self.sigma)
                if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                    raise ValueError(
                        f"base_classifier output must have shape (batch, {self.num_classes}); "
                        f"got shape {tuple(logits.shape)}"
                    )
                counts += torch.bincount(logits.argmax(1), minlength=self.num_classes)
        finally:
            if isinstance(model, nn.Module):
                model.train(was_training)
        return counts.cpu().numpy()


def round_significant(values: Any, digits: int = 3) -> np.ndarray:
    """Round to ``digits`` significant digits, as Cohen et al.'s logs print radii (``{:.3}``)."""
    arr = np.asarray(values.detach().cpu().numpy() if isinstance(values, Tensor) else values, dtype=np.float64)
    out = np.array([float(f"{v:.{digits}g}") for v in arr.ravel()], dtype=np.float64)
    return out.reshape(arr.shape)


def _correct_vector(predictions: Any, targets: Any | None, correct: Any | None) -> np.ndarray:
    def to_np(a: Any) -> np.ndarray:
        return np.asarray(a.detach().cpu().numpy() if isinstance(a, Tensor) else a)

    if (targets is None) == (correct is None):
        raise ValueError("pass exactly one of targets or correct; got " + ("both" if targets is not None else "neither"))
    pred = to_np(predictions).astype(np.int64).ravel()
    if correct is not None:
        corr = to_np(correct).astype(bool).ravel()
        if corr.shape != pred.shape:
            raise ValueError(f"correct must have the shape of predictions {pred.shape}; got shape {corr.shape}")
        return corr & (pred != ABSTAIN)
    tgt = to_np(targets).astype(np.int64).ravel()
    if tgt.shape != pred.shape:
        raise ValueError(f"targets must have the shape of predictions {pred.shape}; got shape {tgt.shape}")
    return pred == tgt


def _radii_vector(radii: Any, size: int) -> np.ndarray:
    r = np.asarray(radii.detach().cpu().numpy() if isinstance(radii, Tensor) else radii, dtype=np.float64).ravel()
    if r.shape != (size,):
        raise ValueError(f"radii must have one entry per prediction ({size}); got shape {r.shape}")
    if np.any(np.isnan(r)):
        raise ValueError("radii must not contain NaN")
    return r


def certified_accuracy(
    radii: Any,
    predictions: Any,
    targets: Any | None = None,
    *,
    correct: Any | None = None,
    at: Sequence[float] | float = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25),
    max_radius: float | None = None,
) -> np.ndarray:
    """Approximate certified accuracy ``acc(r) = mean_i 1[correct_i ∧ R_i ≥ r]`` (Cohen et al.'s analysis).

    Args:
        radii: certified radius per example (0 on abstention).
        predictions: predicted class per example (:data:`ABSTAIN` counts as wrong).
        targets: true labels (exclusive with ``correct``).
        correct: boolean per example (exclusive with ``targets``).
        at: radii at which to evaluate.
        max_radius: the largest certifiable radius (see :func:`max_certifiable_radius`); a
            ``UserWarning`` is issued for any requested radius above it.

    Returns:
        float64 array of certified accuracies, one per entry of ``at``.
    """
    corr = _correct_vector(predictions, targets, correct)
    r = _radii_vector(radii, corr.size)
    grid = np.atleast_1d(np.asarray(at, dtype=np.float64))
    if max_radius is not None and np.any(grid > max_radius):
        warnings.warn(
            f"requested radii {grid[grid > max_radius].tolist()} exceed the largest certifiable radius "
            f"{max_radius:.4g}; certified accuracy there is 0 by construction",
            UserWarning,
            stacklevel=2,
        )
    if corr.size == 0:
        return np.zeros_like(grid)
    return np.array([float(np.mean(corr & (r >= g))) for g in grid], dtype=np.float64)


def average_certified_radius(radii: Any, predictions: Any, targets: Any | None = None, *, correct: Any | None = None) -> float:
    """Average certified radius ``ACR = mean_i 1[correct_i] · R_i`` (Zhai et al., 2020)."""
    corr = _correct_vector(predictions, targets, correct)
    r = _radii_vector(radii, corr.size)
    if corr.size == 0:
        return 0.0
    return float(np.mean(np.where(corr, r, 0.0)))


def plot_certified_accuracy(
    radii: Any,
    predictions: Any,
    targets: Any | None = None,
    *,
    correct: Any | None = None,
    ax: Any = None,
    max_radius: float | None = None,
    num_points: int = 200,
    label: str | None = None,
    style: str = "step",
) -> Any:
    """Plot the certified-accuracy curve ``r ↦ acc(r)`` (matplotlib, imported lazily).

    Args:
        radii, predictions, targets, correct: as in :func:`certified_accuracy`.
        ax: matplotlib Axes to draw on (a new figure when ``None``).
        max_radius: right end of the curve (default: the largest radius in ``radii``, plus 10%).
        num_points: points of the radius grid.
        label: legend label.
        style: ``"step"`` or ``"line"``.

    Returns:
        The matplotlib Axes.
    """
    check_in_choices("style", style, ("step", "line"))
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plotting needs matplotlib; install it with `pip install tailwise[plot]`") from err
    corr = _correct_vector(predictions, targets, correct)
    r = _radii_vector(radii, corr.size)
    top = max_radius if max_radius is not None else (1.1 * float(r.max()) if r.size and r.max() > 0 else 1.0)
    grid = np.linspace(0.0, top, max(2, int(num_points)))
    acc = certified_accuracy(r, np.zeros(corr.size, dtype=np.int64), correct=corr, at=grid)
    if ax is None:
        _, ax = plt.subplots()
    if style == "step":
        ax.step(grid, acc, where="post", label=label)
    else:
        ax.plot(grid, acc, label=label)
    ax.set_xlabel("radius (l2)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0.0, 1.0 if acc.size == 0 else max(1e-3, min(1.0, 1.05 * float(acc.max()))))
    if label is not None:
        ax.legend()
    return ax
