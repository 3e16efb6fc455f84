r"""Calibration metrics: ECE (l1 / l2 / max), MCE, adaptive (equal-mass) ECE, classwise ECE, NLL, Brier.

Every metric has a pure functional form and a stateful :class:`~tailwise.metrics._base.Metric` twin
whose states synchronise across processes at :meth:`compute` (every rank must call ``compute``).

**Inputs.** ``scores[N, C]`` with ``input="probs"`` (rows in [0, 1] that sum to one) or
``input="logits"`` (softmaxed here), and ``target[N]`` integer class indices. Statistics are
accumulated in float64 whatever the input dtype.

**Bins** (equal width, ``M = n_bins``): with edges :math:`e_m = m / M`,

.. math::
    B_1 = [0, e_1], \qquad B_m = (e_{m-1}, e_m] \quad (m = 2, \dots, M),

so every confidence in [0, 1] falls in exactly one bin: 0 in the first, exactly 1.0 in the last
(no phantom ``M+1``-th bin, unlike torchmetrics #3510), and a confidence on an inner edge in the
lower bin. The comparison is done on float64 values with float64 edges ``torch.linspace(0, 1, M+1)``
(:func:`calibration_bin_index`). The CALS code (``calibrate/evaluation/metrics.py``) uses the same
``(lo, hi]`` bins but drops a confidence of exactly 0; that only matters for ``ClasswiseECE``.

**Top-label ECE** (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017; Naeini et al.,
AAAI 2015): with confidence :math:`\hat p_i = \max_j p_{ij}`, prediction
:math:`\hat y_i = \arg\max_j p_{ij}` (first index at ties), :math:`n_m = |B_m|`,
:math:`\mathrm{acc}_m = n_m^{-1}\sum_{i \in B_m} [\hat y_i = y_i]` and
:math:`\mathrm{conf}_m = n_m^{-1}\sum_{i \in B_m} \hat p_i`,

.. math::
    \mathrm{ECE}_{\ell_1} = \sum_m \frac{n_m}{N}\,|\mathrm{acc}_m - \mathrm{conf}_m|, \quad
    \mathrm{ECE}_{\ell_2} = \Big(\sum_m \frac{n_m}{N}(\mathrm{acc}_m - \mathrm{conf}_m)^2\Big)^{1/2}, \quad
    \mathrm{MCE} = \max_{m:\,n_m > 0} |\mathrm{acc}_m - \mathrm{conf}_m|.

Empty bins contribute nothing. ``norm`` follows torchmetrics' ``'l1' | 'l2' | 'max'``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from tailwise._validation import (
    check_in_choices,
    check_logits_target,
    describe,
    validation_enabled,
)
from tailwise.metrics._base import Metric

__all__ = [
    "ECE",
    "MCE",
    "NLL",
    "AdaptiveECE",
    "BrierScore",
    "ClasswiseECE",
    "adaptive_calibration_error",
    "brier_score",
    "calibration_bin_edges",
    "calibration_bin_index",
    "classwise_calibration_error",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
]

InputKind = Literal["probs", "logits"]
Norm = Literal["l1", "l2", "max"]
INPUTS = ("probs", "logits")
NORMS = ("l1", "l2", "max")


# ----------------------------------------------------------------------------------------------- helpers


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    return n_bins


def _to_probabilities(
    scores: Tensor, target: Tensor, input: InputKind = "probs", *, name: str = "probs"
) -> Tensor:
    """Validate ``(scores[N, C], target[N])`` and return float64 class probabilities.

    Args:
        scores: probabilities (``input="probs"``) or logits (``input="logits"``), shape ``[N, C]``.
        target: integer class indices, shape ``[N]``.
        input: how to read ``scores``.
        name: argument name used in error messages.

    Raises:
        TypeError / ValueError: wrong types or shapes, labels out of range, NaN/Inf, no sample, or
            (``input="probs"``, value checks on) values outside [0, 1] or rows not summing to one.
    """
    check_in_choices("input", input, INPUTS)
    check_logits_target(scores, target, logits_name=name)
    if scores.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample; got {describe(scores)}")
    if scores.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one class; got {describe(scores)}")
    x = scores.detach().to(torch.float64)
    if input == "logits":
        return torch.softmax(x, dim=1)
    if validation_enabled():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} must lie in [0, 1] with input='probs'; got values in [{lo:.4g}, {hi:.4g}] "
                "(pass input='logits' for unnormalised scores)"
            )
        sums = x.sum(dim=1)
        tol = max(1e-3, scores.shape[1] * torch.finfo(scores.dtype).eps)
        smin, smax = float(sums.min()), float(sums.max())
        if smin < 1.0 - tol or smax > 1.0 + tol:
            raise ValueError(
                f"{name} rows must sum to 1 with input='probs'; got row sums in [{smin:.6g}, {smax:.6g}] "
                "(pass input='logits' for unnormalised scores)"
            )
    return x


def _binned_error_probabilities(
    probs_or_logits: Tensor, target: Tensor, n_bins: int, norm: Norm, input: InputKind
) -> Tensor:
    """Validate the arguments of a binned calibration error and return the float64 probabilities."""
    _check_n_bins(n_bins)
    check_in_choices("norm", norm, NORMS)
    return _to_probabilities(probs_or_logits, target, input, name="probs_or_logits")


def _out_dtype(scores: Tensor) -> torch.dtype:
    return torch.promote_types(scores.dtype, torch.float32)


def calibration_bin_edges(n_bins: int, *, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    """The ``n_bins + 1`` equal-width bin edges ``0, 1/M, ..., 1`` over [0, 1]."""
    _check_n_bins(n_bins)
    return torch.linspace(0.0, 1.0, n_bins + 1, dtype=dtype, device=device)


def calibration_bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    r"""Bin of each confidence: ``m`` (0-based) with ``e_m < c <= e_{m+1}``, and 0 for ``c = 0``.

    The first bin is closed, ``[0, 1/M]``, the others are ``(lo, hi]``; a confidence of exactly 1.0
    falls in the last bin ``M - 1``. Values are compared in float64.
    """
    conf = confidence.to(torch.float64)
    edges = calibration_bin_edges(n_bins, device=conf.device)
    return torch.bucketize(conf, edges[1:-1], right=False)


def _top_label(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence (float64) and correctness (float64 0/1)."""
    conf, pred = probs.max(dim=1)
    return conf, (pred == target.to(pred.device)).to(torch.float64)


def _bin_sums(bin_index: Tensor, confidence: Tensor, correct: Tensor, n_slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-slot sums (count, sum of confidences, sum of correct), float64."""
    dev = confidence.device
    count = torch.zeros(n_slots, dtype=torch.float64, device=dev)
    conf_sum = torch.zeros(n_slots, dtype=torch.float64, device=dev)
    corr_sum = torch.zeros(n_slots, dtype=torch.float64, device=dev)
    count.index_add_(0, bin_index, torch.ones_like(confidence, dtype=torch.float64))
    conf_sum.index_add_(0, bin_index, confidence.to(torch.float64))
    corr_sum.index_add_(0, bin_index, correct.to(torch.float64))
    return count, conf_sum, corr_sum


def _reduce_bins(count: Tensor, conf_sum: Tensor, corr_sum: Tensor, n_total: Tensor | float, norm: str) -> Tensor:
    """Combine per-bin sums (last dimension = bins) into the ``norm`` calibration error."""
    gap = corr_sum - conf_sum  # n_m (acc_m - conf_m)
    if norm == "l1":
        return gap.abs().sum(-1) / n_total
    if norm == "l2":
        return torch.sqrt((gap.square() / count.clamp_min(1.0)).sum(-1) / n_total)
    per_bin = torch.where(count > 0, gap.abs() / count.clamp_min(1.0), torch.zeros_like(gap))
    return per_bin.max(dim=-1).values


def _top_label_ece(probs: Tensor, target: Tensor, n_bins: int, norm: str) -> Tensor:
    conf, correct = _top_label(probs, target)
    idx = calibration_bin_index(conf, n_bins)
    count, conf_sum, corr_sum = _bin_sums(idx, conf, correct, n_bins)
    return _reduce_bins(count, conf_sum, corr_sum, float(conf.numel()), norm)


def _equal_mass_sums(confidence: Tensor, correct: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort by (confidence, correct) and split into ``n_bins`` contiguous chunks of near-equal size."""
    n = confidence.numel()
    order = torch.sort(correct, stable=True).indices
    order = order[torch.sort(confidence[order], stable=True).indices]
    conf_sorted, corr_sorted = confidence[order], correct[order]
    q, r = divmod(n, n_bins)
    sizes = torch.full((n_bins,), q, dtype=torch.long, device=confidence.device)
    sizes[:r] += 1
    chunk = torch.repeat_interleave(torch.arange(n_bins, device=confidence.device), sizes)
    return _bin_sums(chunk, conf_sorted, corr_sorted, n_bins)


def _classwise_sums(probs: Tensor, target: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per (class, bin) sums of shape ``[C, M]`` for the one-vs-rest calibration of every class."""
    c = probs.shape[1]
    onehot = torch.nn.functional.one_hot(target.to(probs.device).long(), c).to(torch.float64)
    idx = calibration_bin_index(probs, n_bins)  # [N, C]
    slot = (torch.arange(c, device=probs.device) * n_bins + idx).reshape(-1)
    count, conf_sum, corr_sum = _bin_sums(slot, probs.reshape(-1), onehot.reshape(-1), c * n_bins)
    return count.view(c, n_bins), conf_sum.view(c, n_bins), corr_sum.view(c, n_bins)


# -------------------------------------------------------------------------------------------- functional


def expected_calibration_error(
    probs_or_logits: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: Norm = "l1",
    input: InputKind = "probs",
) -> Tensor:
    r"""Top-label expected calibration error with equal-width bins (Guo et al., ICML 2017).

    .. math::
        \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}\,\big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|

    for ``norm="l1"``; ``"l2"`` takes the root of the weighted mean squared gap and ``"max"`` the
    largest gap over non-empty bins (the MCE). Bins are ``[0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1]``.

    Args:
        probs_or_logits: ``[N, C]`` probabilities or logits (see ``input``).
        target: ``[N]`` integer labels.
        n_bins: number of equal-width bins ``M`` (15 as in Guo et al. and the CALS code).
        norm: ``"l1" | "l2" | "max"``.
        input: ``"probs"`` or ``"logits"`` (softmaxed over dim 1).

    Returns:
        0-d tensor in the input's floating dtype (at least float32).
    """
    probs = _binned_error_probabilities(probs_or_logits, target, n_bins, norm, input)
    return _top_label_ece(probs, target, n_bins, norm).to(_out_dtype(probs_or_logits))


def maximum_calibration_error(
    probs_or_logits: Tensor, target: Tensor, n_bins: int = 15, input: InputKind = "probs"
) -> Tensor:
    r"""Maximum calibration error :math:`\max_{m: |B_m| > 0} |\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|`.

    Same bins as :func:`expected_calibration_error` (Naeini et al., AAAI 2015; Guo et al., ICML 2017).
    """
    return expected_calibration_error(probs_or_logits, target, n_bins=n_bins, norm="max", input=input)


def adaptive_calibration_error(
    probs_or_logits: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: Norm = "l1",
    input: InputKind = "probs",
) -> Tensor:
    r"""Adaptive (equal-mass) top-label ECE (Nixon et al., "Measuring Calibration in Deep Learning", 2019).

    The ``N`` samples are sorted by top-label confidence (ties ordered by correctness, so the value is
    a function of the multiset of ``(confidence, correct)`` pairs and not of the input order) and cut
    into ``M`` contiguous chunks whose sizes differ by at most one (the first ``N mod M`` chunks get
    one more, like ``numpy.array_split``). Then

    .. math::
        \mathrm{AdaECE} = \sum_m \frac{|B_m|}{N}\,|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|.

    The CALS code instead interpolates edges with ``np.interp`` and bins by value, which lets tied
    confidences share a bin and leaves the smallest confidence out; the chunk rule here always covers
    every sample. With ``N < M`` the empty chunks contribute nothing.
    """
    probs = _binned_error_probabilities(probs_or_logits, target, n_bins, norm, input)
    conf, correct = _top_label(probs, target)
    count, conf_sum, corr_sum = _equal_mass_sums(conf, correct, n_bins)
    return _reduce_bins(count, conf_sum, corr_sum, float(conf.numel()), norm).to(_out_dtype(probs_or_logits))


def classwise_calibration_error(
    probs_or_logits: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: Norm = "l1",
    input: InputKind = "probs",
) -> Tensor:
    r"""Classwise ECE (Kull et al., "Beyond temperature scaling", NeurIPS 2019; as in the CALS code).

    Every class ``j`` is treated as a one-vs-rest problem over **all** ``N`` samples with confidence
    :math:`p_{ij}` and outcome :math:`[y_i = j]`, binned with the equal-width bins; the class errors
    are averaged:

    .. math::
        \mathrm{cwECE} = \frac{1}{C}\sum_{j=1}^{C}\sum_{m=1}^{M}
        \frac{|B_{mj}|}{N}\,\big|\mathrm{freq}_j(B_{mj}) - \mathrm{conf}_j(B_{mj})\big|.

    ``norm`` is applied per class before the mean. A probability of exactly 0 goes to the first bin
    (the CALS code drops it).
    """
    probs = _binned_error_probabilities(probs_or_logits, target, n_bins, norm, input)
    count, conf_sum, corr_sum = _classwise_sums(probs, target, n_bins)
    per_class = _reduce_bins(count, conf_sum, corr_sum, float(probs.shape[0]), norm)
    return per_class.mean().to(_out_dtype(probs_or_logits))


def _nll_terms(probs_or_logits: Tensor, target: Tensor, input: str) -> Tensor:
    check_in_choices("input", input, INPUTS)
    if input == "logits":
        check_logits_target(probs_or_logits, target, logits_name="probs_or_logits")
        if probs_or_logits.shape[0] == 0:
            raise ValueError(f"probs_or_logits must hold at least one sample; got {describe(probs_or_logits)}")
        logp = torch.log_softmax(probs_or_logits.detach().to(torch.float64), dim=1)
    else:
        logp = torch.log(_to_probabilities(probs_or_logits, target, "probs", name="probs_or_logits"))
    return -logp.gather(1, target.to(logp.device).long().view(-1, 1)).squeeze(1)


def negative_log_likelihood(probs_or_logits: Tensor, target: Tensor, input: InputKind = "probs") -> Tensor:
    r"""Mean negative log-likelihood :math:`-\frac{1}{N}\sum_i \log p_{i, y_i}`.

    With ``input="logits"`` the log-probabilities come from ``log_softmax`` (exact in the tails);
    with ``input="probs"`` a probability of exactly 0 on the true class gives ``inf`` (not clamped).
    """
    return _nll_terms(probs_or_logits, target, input).mean().to(_out_dtype(probs_or_logits))


def _brier_terms(probs_or_logits: Tensor, target: Tensor, input: str) -> Tensor:
    probs = _to_probabilities(probs_or_logits, target, input, name="probs_or_logits")
    onehot = torch.nn.functional.one_hot(target.to(probs.device).long(), probs.shape[1]).to(torch.float64)
    return (probs - onehot).square().sum(dim=1)


def brier_score(probs_or_logits: Tensor, target: Tensor, input: InputKind = "probs") -> Tensor:
    r"""Multi-class Brier score (Brier, 1950): :math:`\frac{1}{N}\sum_i \sum_j (p_{ij} - [y_i = j])^2`.

    Summed over classes and averaged over samples, so it lies in [0, 2] (some libraries divide by ``C``).
    """
    return _brier_terms(probs_or_logits, target, input).mean().to(_out_dtype(probs_or_logits))


# -------------------------------------------------------------------------------------------- stateful


class _CatStateCheckpoint:
    """Mixin: save and restore a metric's ``cat`` states through ``get_extra_state``."""

    _cat_lists: dict[str, list[Tensor]]

    def get_extra_state(self) -> dict[str, Tensor]:
        return {name: self.cat_state(name).cpu() for name in self._cat_lists}  # type: ignore[attr-defined]

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        for name in self._cat_lists:
            value = state.get(name)
            self._cat_lists[name] = [value] if value is not None and value.numel() else []


def _require_samples(metric: str, n_total: Tensor) -> None:
    if float(n_total) <= 0:
        raise RuntimeError(f"{metric}.compute() needs at least one sample; call update() first")


class ECE(Metric):
    """Streaming top-label ECE: per-bin sums (count, confidence, correct) in ``sum`` states.

    The three ``[n_bins]`` float64 states are all-reduced at :meth:`compute`, so the result on every
    rank equals :func:`expected_calibration_error` on the union of the ranks' samples.

    Args:
        n_bins: number of equal-width bins.
        norm: ``"l1" | "l2" | "max"``.
        input: ``"probs"`` or ``"logits"``.

    Example:
        >>> metric = ECE(n_bins=15, input="logits")
        >>> for logits, y in loader:  # doctest: +SKIP
        ...     metric.update(logits, y)
        >>> metric.compute()  # doctest: +SKIP
    """

    def __init__(self, n_bins: int = 15, norm: Norm = "l1", input: InputKind = "probs") -> None:
        super().__init__()
        self.n_bins = _check_n_bins(n_bins)
        self.norm = check_in_choices("norm", norm, NORMS)
        self.input = check_in_choices("input", input, INPUTS)
        zeros = torch.zeros(n_bins, dtype=torch.float64)
        self.add_state("bin_count", zeros, "sum")
        self.add_state("bin_confidence_sum", zeros, "sum")
        self.add_state("bin_correct_sum", zeros, "sum")

    def update(self, probs_or_logits: Tensor, target: Tensor) -> None:
        """Add a batch of ``[N, C]`` scores and ``[N]`` labels."""
        probs = _to_probabilities(probs_or_logits, target, self.input, name="probs_or_logits")
        conf, correct = _top_label(probs, target)
        sums = _bin_sums(calibration_bin_index(conf, self.n_bins), conf, correct, self.n_bins)
        dev = self.bin_count.device
        self.bin_count += sums[0].to(dev)
        self.bin_confidence_sum += sums[1].to(dev)
        self.bin_correct_sum += sums[2].to(dev)

    def compute(self) -> Tensor:
        """The calibration error over every sample seen (on all ranks), a float64 0-d tensor."""
        self.sync()
        n_total = self.bin_count.sum()
        _require_samples(type(self).__name__, n_total)
        return _reduce_bins(self.bin_count, self.bin_confidence_sum, self.bin_correct_sum, n_total, self.norm)


class MCE(ECE):
    """Streaming maximum calibration error: :class:`ECE` with ``norm="max"``."""

    def __init__(self, n_bins: int = 15, input: InputKind = "probs") -> None:
        super().__init__(n_bins=n_bins, norm="max", input=input)


class AdaptiveECE(_CatStateCheckpoint, Metric):
    """Streaming adaptive (equal-mass) ECE; see :func:`adaptive_calibration_error`.

    Equal-mass bins depend on every confidence, so the per-sample top-label confidences and
    correctness are kept in ``cat`` states (two float64 values per sample; all-gathered at
    :meth:`compute`, saved in ``state_dict`` as extra state).
    """

    def __init__(self, n_bins: int = 15, norm: Norm = "l1", input: InputKind = "probs") -> None:
        super().__init__()
        self.n_bins = _check_n_bins(n_bins)
        self.norm = check_in_choices("norm", norm, NORMS)
        self.input = check_in_choices("input", input, INPUTS)
        self.add_state("confidence", None, "cat")
        self.add_state("correct", None, "cat")

    def update(self, probs_or_logits: Tensor, target: Tensor) -> None:
        """Add a batch of ``[N, C]`` scores and ``[N]`` labels."""
        probs = _to_probabilities(probs_or_logits, target, self.input, name="probs_or_logits")
        conf, correct = _top_label(probs, target)
        self.append("confidence", conf)
        self.append("correct", correct)

    def compute(self) -> Tensor:
        """Adaptive ECE over every sample seen (on all ranks), a float64 0-d tensor."""
        self.sync()
        conf = self.cat_state("confidence").to(torch.float64)
        correct = self.cat_state("correct").to(torch.float64)
        _require_samples(type(self).__name__, torch.tensor(conf.numel()))
        count, conf_sum, corr_sum = _equal_mass_sums(conf, correct, self.n_bins)
        return _reduce_bins(count, conf_sum, corr_sum, float(conf.numel()), self.norm)


class ClasswiseECE(Metric):
    """Streaming classwise ECE; ``[num_classes, n_bins]`` ``sum`` states (see :func:`classwise_calibration_error`)."""

    def __init__(self, num_classes: int, n_bins: int = 15, norm: Norm = "l1", input: InputKind = "probs") -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
        self.num_classes = num_classes
        self.n_bins = _check_n_bins(n_bins)
        self.norm = check_in_choices("norm", norm, NORMS)
        self.input = check_in_choices("input", input, INPUTS)
        zeros = torch.zeros(num_classes, n_bins, dtype=torch.float64)
        self.add_state("bin_count", zeros, "sum")
        self.add_state("bin_confidence_sum", zeros, "sum")
        self.add_state("bin_frequency_sum", zeros, "sum")
        self.add_state("n_samples", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, probs_or_logits: Tensor, target: Tensor) -> None:
        """Add a batch of ``[N, num_classes]`` scores and ``[N]`` labels."""
        if isinstance(probs_or_logits, Tensor) and probs_or_logits.ndim == 2 and probs_or_logits.shape[1] != self.num_classes:
            raise ValueError(
                f"probs_or_logits must have {self.num_classes} columns (num_classes); got {describe(probs_or_logits)}"
            )
        probs = _to_probabilities(probs_or_logits, target, self.input, name="probs_or_logits")
        count, conf_sum, freq_sum = _classwise_sums(probs, target, self.n_bins)
        dev = self.bin_count.device
        self.bin_count += count.to(dev)
        self.bin_confidence_sum += conf_sum.to(dev)
        self.bin_frequency_sum += freq_sum.to(dev)
        self.n_samples += float(probs.shape[0])

    def compute(self) -> Tensor:
        """Classwise ECE over every sample seen (on all ranks), a float64 0-d tensor."""
        self.sync()
        _require_samples(type(self).__name__, self.n_samples)
        per_class = _reduce_bins(
            self.bin_count, self.bin_confidence_sum, self.bin_frequency_sum, self.n_samples, self.norm
        )
        return per_class.mean()


class _MeanMetric(Metric):
    """Mean of a per-sample quantity kept as a (sum, count) pair of ``sum`` states."""

    def __init__(self, input: InputKind) -> None:
        super().__init__()
        self.input = check_in_choices("input", input, INPUTS)
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), "sum")

    def _terms(self, probs_or_logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, probs_or_logits: Tensor, target: Tensor) -> None:
        """Add a batch of ``[N, C]`` scores and ``[N]`` labels."""
        terms = self._terms(probs_or_logits, target)
        self.total += terms.sum().to(self.total.device)
        self.count += float(terms.numel())

    def compute(self) -> Tensor:
        """The mean over every sample seen (on all ranks), a float64 0-d tensor."""
        self.sync()
        _require_samples(type(self).__name__, self.count)
        return self.total / self.count


class NLL(_MeanMetric):
    """Streaming mean negative log-likelihood (see :func:`negative_log_likelihood`)."""

    def __init__(self, input: InputKind = "probs") -> None:
        super().__init__(input)

    def _terms(self, probs_or_logits: Tensor, target: Tensor) -> Tensor:
        return _nll_terms(probs_or_logits, target, self.input)


class BrierScore(_MeanMetric):
    """Streaming multi-class Brier score (see :func:`brier_score`)."""

    def __init__(self, input: InputKind = "probs") -> None:
        super().__init__(input)

    def _terms(self, probs_or_logits: Tensor, target: Tensor) -> Tensor:
        return _brier_terms(probs_or_logits, target, self.input)
