r"""Set-valued classification: top-K and average-K sets, their error, size and per-class counts.

Lorieul, Joly & Shasha, "Classification Under Ambiguity: When Is Average-K Better Than Top-K?"
(arXiv 2112.08851). With class scores :math:`\hat\eta_j(x)` (softmax probabilities):

* **top-K** predicts the :math:`K` labels with the largest scores, :math:`S_K(x)`;
* **average-K** predicts :math:`S_\lambda(x) = \{j : \hat\eta_j(x) \ge \lambda\}` with :math:`\lambda`
  chosen so that the *average* set size is :math:`K`: :math:`\mathbb E_X |S_\lambda(X)| = K`. Sets
  are large on ambiguous inputs and small on easy ones, and with the true :math:`\eta` this is the
  error-optimal rule at mean size :math:`K` (never worse than top-K);
* the **set error** is :math:`P(Y \notin S(X))`, the **coverage** its complement.

The plug-in :math:`\hat\lambda` comes from held-out scores (no labels needed), as in the
PlantNet-300K code of the same group (Garcin et al., NeurIPS 2021 Datasets & Benchmarks;
``epoch.py``/``utils.py`` at plantnet/PlantNet-300K@0e7ee16), whose counters
``count_correct_topk`` / ``count_correct_avgk`` / ``update_correct_per_class_{topk,avgk}`` the
stateful metrics here reproduce (see :func:`average_k_threshold` for the threshold rule).

**Ties.** Top-K breaks ties in the scores toward the lower class index (a stable descending sort).
Average-K includes every score equal to :math:`\lambda`; with continuous scores ties have probability
zero. The exactly-K randomised rule of the paper (include the tied scores at :math:`\lambda` with the
probability that makes the mean size exactly :math:`K`) is not implemented: the midpoint rule already
gives a held-out mean size of exactly :math:`K` whenever the :math:`nK`-th and :math:`(nK+1)`-th
scores differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_finite, check_in_choices, describe, validation_enabled
from tailwise.metrics._base import Metric
from tailwise.metrics.calibration import _CatStateCheckpoint

__all__ = [
    "AverageKSetError",
    "SetPredictionResult",
    "SetSizeCurve",
    "TopKSetError",
    "average_k_sets",
    "average_k_threshold",
    "error_vs_set_size_curve",
    "mean_set_size",
    "per_class_set_correct",
    "per_class_set_error",
    "plot_error_vs_set_size",
    "set_contains_target",
    "set_coverage",
    "set_error",
    "top_k_sets",
    "top_k_target_rank",
]

ThresholdRule = Literal["midpoint", "quantile"]
RULES = ("midpoint", "quantile")
KLike = float | int | Sequence[float] | Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------- checks


def _check_scores(name: str, scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {describe(scores)}")
    if scores.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C); got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {scores.dtype}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one sample and one class; got shape {tuple(scores.shape)}")
    check_finite(name, scores)
    return scores


def _check_target(target: Tensor, n: int, c: int, *, against: str) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {describe(target)}")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"target must have shape ({n},) to match {against}; got shape {tuple(target.shape)}")
    if validation_enabled() and n > 0:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"target labels must lie in [0, {c - 1}] for {c} classes; got values in [{lo}, {hi}]")
    return target.long()


def _check_mask(mask: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor; got {describe(mask)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = label in the set); got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (N, C); got shape {tuple(mask.shape)}")
    return mask


def _check_k(k: int, num_classes: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= num_classes:
        raise ValueError(f"{name} must be an integer in [1, {num_classes}] (number of classes); got {k!r}")
    return int(k)


def _as_k_list(avg_k: KLike, num_classes: int, *, integer: bool, name: str) -> tuple[list[float], bool]:
    """Normalise a scalar or a sequence of K values; returns (values, was_scalar)."""
    scalar = isinstance(avg_k, (int, float, np.integer, np.floating)) or (
        isinstance(avg_k, (Tensor, np.ndarray)) and avg_k.ndim == 0
    )
    if isinstance(avg_k, bool):
        raise TypeError(f"{name} must be a number or a sequence of numbers; got {avg_k!r}")
    if isinstance(avg_k, Tensor):
        values = avg_k.detach().cpu().reshape(-1).tolist()
    else:
        try:
            values = np.asarray(avg_k, dtype=np.float64).reshape(-1).tolist()
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a number or a sequence of numbers; got {describe(avg_k)}") from err
    if not values:
        raise ValueError(f"{name} must hold at least one value; got {describe(avg_k)}")
    for v in values:
        bad = not math.isfinite(v) or not 0 < v <= num_classes or (integer and v != int(v))
        if bad:
            kind = "integers" if integer else "numbers"
            raise ValueError(f"{name} must be {kind} in (0, {num_classes}] (number of classes); got {avg_k!r}")
    return [int(v) if integer else float(v) for v in values], scalar


# ------------------------------------------------------------------------------------------ predictors


def top_k_target_rank(scores: Tensor, target: Tensor) -> Tensor:
    r"""0-based rank of the true label in a stable descending sort of each row of ``scores``.

    :math:`r_i = \#\{j : s_{ij} > s_{i y_i}\} + \#\{j < y_i : s_{ij} = s_{i y_i}\}`; the label is in the
    top-K set iff :math:`r_i < K`. Costs ``O(N C)`` without sorting.
    """
    _check_scores("scores", scores)
    y = _check_target(target, scores.shape[0], scores.shape[1], against=f"scores {tuple(scores.shape)}").to(scores.device)
    s_y = scores.gather(1, y.view(-1, 1))
    cols = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    ahead = (scores > s_y) | ((scores == s_y) & (cols < y.view(-1, 1)))
    return ahead.sum(dim=1)


def top_k_sets(scores: Tensor, k: int) -> Tensor:
    """Boolean ``[N, C]`` mask of the ``k`` largest scores of each row (ties: lower class index first).

    Any monotone transform of the probabilities (logits, log-probabilities) gives the same sets.
    """
    _check_scores("scores", scores)
    k = _check_k(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(1, order, True)


def average_k_threshold(probs_heldout: Tensor, avg_k: KLike, rule: ThresholdRule = "midpoint") -> Tensor:
    r"""Plug-in average-K threshold :math:`\hat\lambda_K` from held-out scores (no labels needed).

    Pool the :math:`n \cdot C` held-out scores and sort them in descending order, :math:`s_0 \ge s_1
    \ge \dots \ge s_{nC-1}`; let :math:`m = nK` (rounded to the nearest integer for a fractional
    ``K``). Then

    * ``rule="midpoint"`` (default; PlantNet-300K ``epoch.py::val_epoch``, 0-based indices):
      :math:`\hat\lambda_K = \tfrac12 (s_{m-1} + s_m)`, midway between the :math:`m`-th and
      :math:`(m+1)`-th largest scores, so exactly :math:`m` held-out scores are
      :math:`\ge \hat\lambda_K` (no ties) and the held-out mean set size is exactly :math:`K`;
    * ``rule="quantile"``: :math:`\hat\lambda_K = s_{m-1}`, the largest :math:`\lambda` with at least
      :math:`m` scores :math:`\ge \lambda`, i.e. the upper empirical :math:`(1 - K/C)`-quantile of the
      pooled scores (the paper's plug-in estimator). It is the more natural choice when the threshold
      is estimated on a calibration split separate from the evaluation split; both rules converge to
      the population :math:`\lambda_K` and differ by at most one score gap.

    For :math:`m = nC` (``K = C``) both rules return :math:`s_{nC-1}`, the smallest score (every
    label in every set).

    Args:
        probs_heldout: ``[n, C]`` held-out probabilities (any scores compared across samples).
        avg_k: target mean set size ``K`` in ``(0, C]``, or a sequence of them.
        rule: ``"midpoint"`` or ``"quantile"``.

    Returns:
        A 0-d tensor (scalar ``avg_k``) or a ``[len(avg_k)]`` tensor, in the dtype of ``probs_heldout``.
    """
    _check_scores("probs_heldout", probs_heldout)
    check_in_choices("rule", rule, RULES)
    n, c = probs_heldout.shape
    ks, scalar = _as_k_list(avg_k, c, integer=False, name="avg_k")
    total = n * c
    ms = []
    for k in ks:
        m = math.floor(n * k + 0.5)
        if m < 1:
            raise ValueError(f"avg_k * n_heldout must be at least 0.5 so that one score is kept; got avg_k={k} with n={n}")
        ms.append(min(m, total))
    s = torch.sort(probs_heldout.detach().reshape(-1), descending=True).values
    out = []
    for m in ms:
        if rule == "midpoint" and m < total:
            out.append(0.5 * (s[m - 1] + s[m]))
        else:
            out.append(s[m - 1])
    lam = torch.stack(out)
    return lam[0] if scalar else lam


def average_k_sets(probs: Tensor, threshold: float | Tensor) -> Tensor:
    r"""Average-K sets :math:`S_\lambda(x) = \{j : p_j(x) \ge \lambda\}` as a boolean ``[N, C]`` mask.

    A set may be empty (every score below :math:`\lambda`); it then counts as an error.
    """
    _check_scores("probs", probs)
    if isinstance(threshold, Tensor):
        if threshold.numel() != 1:
            raise ValueError(f"threshold must be a scalar; got {describe(threshold)} (call once per K)")
        threshold = threshold.reshape(()).to(probs.device)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number or a 0-d tensor; got {describe(threshold)}")
    return probs >= threshold


# -------------------------------------------------------------------------------------------- metrics


def set_contains_target(mask: Tensor, target: Tensor) -> Tensor:
    """Boolean ``[N]``: whether each sample's label is in its predicted set, ``mask[i, target[i]]``."""
    _check_mask(mask)
    y = _check_target(target, mask.shape[0], mask.shape[1], against=f"mask {tuple(mask.shape)}").to(mask.device)
    return mask.gather(1, y.view(-1, 1)).squeeze(1)


def set_error(mask: Tensor, target: Tensor) -> Tensor:
    r"""Set error :math:`\frac1N \sum_i [y_i \notin S(x_i)]` (0-d float64 tensor; NaN for ``N = 0``)."""
    return 1.0 - set_coverage(mask, target)


def set_coverage(mask: Tensor, target: Tensor) -> Tensor:
    r"""Coverage :math:`\frac1N \sum_i [y_i \in S(x_i)]` (torch-uncertainty's ``coverage_rate``)."""
    return set_contains_target(mask, target).to(torch.float64).mean()


def mean_set_size(mask: Tensor) -> Tensor:
    r"""Mean set size :math:`\frac1N \sum_i |S(x_i)|` (torch-uncertainty's ``set_size``)."""
    _check_mask(mask)
    return mask.sum(dim=1).to(torch.float64).mean()


def per_class_set_correct(mask: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Per-class count of samples whose label is in their set (int64 ``[C]``).

    The counters of PlantNet-300K's ``update_correct_per_class_{topk,avgk}``, before their division
    by the per-class sample counts.
    """
    hit = set_contains_target(mask, target)
    c = mask.shape[1] if num_classes is None else int(num_classes)
    y = target.to(mask.device).long()
    return torch.zeros(c, dtype=torch.int64, device=mask.device).index_add_(0, y, hit.long())


def per_class_set_error(mask: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    r"""Per-class set error :math:`P(y \notin S(x) \mid y = j)`; NaN for a class with no sample."""
    correct = per_class_set_correct(mask, target, num_classes)
    y = target.to(mask.device).long()
    count = torch.zeros_like(correct).index_add_(0, y, torch.ones_like(y))
    err = 1.0 - correct.double() / count.clamp_min(1).double()
    return torch.where(count > 0, err, torch.full_like(err, float("nan")))


# ------------------------------------------------------------------------------------------- stateful


@dataclass(frozen=True)
class SetPredictionResult:
    """Result of :class:`TopKSetError` / :class:`AverageKSetError` (CPU tensors, one row per K).

    Attributes:
        ks: ``[L]`` the K values (NaN where an average-K threshold was given without its K).
        thresholds: ``[L]`` the average-K thresholds (``None`` for top-K).
        n_samples: number of samples.
        n_correct: ``[L]`` int64, samples whose label is in the set.
        error: ``[L]`` set error ``1 - n_correct / n_samples``.
        mean_set_size: ``[L]`` mean set size.
        per_class_correct: ``[L, C]`` int64 per-class counts of correct samples.
        per_class_count: ``[C]`` int64 samples per class.
        per_class_error: ``[L, C]`` per-class set error (NaN for a class with no sample).
    """

    ks: Tensor
    thresholds: Tensor | None
    n_samples: int
    n_correct: Tensor
    error: Tensor
    mean_set_size: Tensor
    per_class_correct: Tensor
    per_class_count: Tensor
    per_class_error: Tensor

    @property
    def coverage(self) -> Tensor:
        """``[L]`` coverage ``1 - error``."""
        return 1.0 - self.error


def _result(
    ks: Tensor, thresholds: Tensor | None, n_samples: Tensor, n_correct: Tensor, size_sum: Tensor,
    per_class_correct: Tensor, per_class_count: Tensor,
) -> SetPredictionResult:
    n = int(n_samples)
    if n <= 0:
        raise RuntimeError("set-valued metric compute() needs at least one sample; call update() first")
    pcc, cnt = per_class_correct.cpu(), per_class_count.cpu()
    pce = 1.0 - pcc.double() / cnt.clamp_min(1).double()
    pce = torch.where(cnt > 0, pce, torch.full_like(pce, float("nan")))
    return SetPredictionResult(
        ks=ks.detach().cpu().double(),
        thresholds=None if thresholds is None else thresholds.detach().cpu(),
        n_samples=n,
        n_correct=n_correct.cpu(),
        error=1.0 - n_correct.cpu().double() / n,
        mean_set_size=size_sum.cpu().double() / n,
        per_class_correct=pcc,
        per_class_count=cnt,
        per_class_error=pce,
    )


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
    return int(num_classes)


class TopKSetError(Metric):
    """Streaming top-K set error for several K, with per-class counts.

    Mirrors PlantNet-300K's ``count_correct_topk`` (label among the K largest scores) and
    ``update_correct_per_class_topk``. States are int64 ``sum`` states, all-reduced at :meth:`compute`.

    Args:
        num_classes: number of classes ``C``.
        ks: one K or a sequence of K values (integers in ``[1, C]``).
    """

    ks: Tensor

    def __init__(self, num_classes: int, ks: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        values, _ = _as_k_list(ks, self.num_classes, integer=True, name="ks")
        self.register_buffer("ks", torch.tensor(values, dtype=torch.int64), persistent=False)
        n_k = len(values)
        self.add_state("n_samples", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("n_correct", torch.zeros(n_k, dtype=torch.int64), "sum")
        self.add_state("per_class_correct", torch.zeros(n_k, num_classes, dtype=torch.int64), "sum")
        self.add_state("per_class_count", torch.zeros(num_classes, dtype=torch.int64), "sum")

    def update(self, scores: Tensor, target: Tensor) -> None:
        """Add ``[N, C]`` scores (probabilities or logits) and ``[N]`` labels."""
        _check_scores("scores", scores)
        if scores.shape[1] != self.num_classes:
            raise ValueError(f"scores must have {self.num_classes} columns (num_classes); got {describe(scores)}")
        rank = top_k_target_rank(scores, target)
        dev = self.n_correct.device
        hit = (rank.to(dev).view(1, -1) < self.ks.view(-1, 1)).long()  # [L, N]
        y = target.to(dev).long()
        self.n_samples += y.numel()
        self.n_correct += hit.sum(dim=1)
        self.per_class_correct.index_add_(1, y, hit)
        self.per_class_count.index_add_(0, y, torch.ones_like(y))

    def compute(self) -> SetPredictionResult:
        """Counts and errors over every sample seen (on all ranks)."""
        self.sync()
        size_sum = self.ks.to(torch.int64) * self.n_samples
        return _result(self.ks, None, self.n_samples, self.n_correct, size_sum, self.per_class_correct,
                       self.per_class_count)


class AverageKSetError(_CatStateCheckpoint, Metric):
    r"""Streaming average-K set error, mean set size and per-class counts for several thresholds.

    Two modes:

    * **fixed thresholds** (``thresholds`` given, e.g. from :func:`average_k_threshold` on a
      validation split): int64 ``sum`` states only; a sample is correct iff
      :math:`p_y \ge \lambda` (PlantNet-300K ``count_correct_avgk`` /
      ``update_correct_per_class_avgk``), and the set size is :math:`\#\{j : p_j \ge \lambda\}`;
    * **in-sample thresholds** (only ``avg_k`` given): the probabilities are kept in a ``cat`` state and
      :meth:`compute` estimates :math:`\hat\lambda_K` on everything seen (all ranks) with ``rule``, then
      counts on the same data, as PlantNet-300K's validation epoch does. The thresholds are in the
      result, ready for a test-split metric. Memory grows with ``N \cdot C``.

    Args:
        num_classes: number of classes ``C``.
        thresholds: one threshold or a sequence (fixed mode).
        avg_k: the K values; required in in-sample mode, optional (for reporting) in fixed mode.
        rule: threshold rule in in-sample mode (see :func:`average_k_threshold`).
    """

    thresholds: Tensor
    ks: Tensor

    def __init__(
        self,
        num_classes: int,
        thresholds: float | Sequence[float] | Tensor | None = None,
        avg_k: KLike | None = None,
        rule: ThresholdRule = "midpoint",
    ) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.rule = check_in_choices("rule", rule, RULES)
        if thresholds is None and avg_k is None:
            raise ValueError("AverageKSetError needs thresholds (fixed mode) or avg_k (in-sample mode); got neither")
        ks = None if avg_k is None else _as_k_list(avg_k, self.num_classes, integer=False, name="avg_k")[0]
        self.in_sample = thresholds is None
        if self.in_sample:
            assert ks is not None
            self.register_buffer("thresholds", torch.full((len(ks),), float("nan"), dtype=torch.float64),
                                 persistent=False)
            self.add_state("probs", None, "cat")
            self.add_state("target", None, "cat")
        else:
            lam = torch.as_tensor(
                thresholds.detach().cpu() if isinstance(thresholds, Tensor) else np.asarray(thresholds, dtype=np.float64),
                dtype=torch.float64,
            ).reshape(-1)
            if lam.numel() == 0 or not bool(torch.isfinite(lam).all()):
                raise ValueError(f"thresholds must be one or more finite numbers; got {describe(thresholds)}")
            if ks is not None and len(ks) != lam.numel():
                raise ValueError(f"avg_k must give one K per threshold ({lam.numel()}); got {len(ks)} values")
            self.register_buffer("thresholds", lam, persistent=True)
            n_k = lam.numel()
            self.add_state("n_samples", torch.zeros((), dtype=torch.int64), "sum")
            self.add_state("n_correct", torch.zeros(n_k, dtype=torch.int64), "sum")
            self.add_state("set_size_sum", torch.zeros(n_k, dtype=torch.int64), "sum")
            self.add_state("per_class_correct", torch.zeros(n_k, num_classes, dtype=torch.int64), "sum")
            self.add_state("per_class_count", torch.zeros(num_classes, dtype=torch.int64), "sum")
        n_k = self.thresholds.numel()
        k_values = torch.tensor(ks, dtype=torch.float64) if ks is not None else torch.full((n_k,), float("nan"))
        self.register_buffer("ks", k_values.double(), persistent=False)

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Add ``[N, C]`` probabilities and ``[N]`` labels."""
        _check_scores("probs", probs)
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"probs must have {self.num_classes} columns (num_classes); got {describe(probs)}")
        y = _check_target(target, probs.shape[0], probs.shape[1], against=f"probs {tuple(probs.shape)}")
        if self.in_sample:
            self.append("probs", probs.detach())
            self.append("target", y.detach())
            return
        dev = self.n_correct.device
        p = probs.detach().to(dev)
        y = y.to(dev)
        lam = self.thresholds.to(dev).view(-1, 1)
        p_y = p.gather(1, y.view(-1, 1)).view(1, -1).double()
        hit = (p_y >= lam).long()  # [L, N]
        sizes = torch.stack([(p.double() >= t).sum() for t in self.thresholds.to(dev)])
        self.n_samples += y.numel()
        self.n_correct += hit.sum(dim=1)
        self.set_size_sum += sizes
        self.per_class_correct.index_add_(1, y, hit)
        self.per_class_count.index_add_(0, y, torch.ones_like(y))

    def compute(self) -> SetPredictionResult:
        """Counts, errors and mean set sizes over every sample seen (on all ranks)."""
        self.sync()
        if not self.in_sample:
            return _result(self.ks, self.thresholds, self.n_samples, self.n_correct, self.set_size_sum,
                           self.per_class_correct, self.per_class_count)
        probs, target = self.cat_state("probs"), self.cat_state("target").long()
        if probs.numel() == 0:
            raise RuntimeError("AverageKSetError.compute() needs at least one sample; call update() first")
        probs = probs.view(-1, self.num_classes)
        lam = average_k_threshold(probs, self.ks.tolist(), rule=self.rule)
        self.thresholds = lam.detach().to(torch.float64).cpu()
        n_k, c = lam.numel(), self.num_classes
        n_correct = torch.zeros(n_k, dtype=torch.int64)
        size_sum = torch.zeros(n_k, dtype=torch.int64)
        pcc = torch.zeros(n_k, c, dtype=torch.int64)
        count = torch.zeros(c, dtype=torch.int64).index_add_(0, target.cpu(), torch.ones_like(target.cpu()))
        for i in range(n_k):
            mask = average_k_sets(probs, lam[i])
            n_correct[i] = int(set_contains_target(mask, target).sum())
            size_sum[i] = int(mask.sum())
            pcc[i] = per_class_set_correct(mask, target, c).cpu()
        return _result(self.ks, lam, torch.tensor(target.numel()), n_correct, size_sum, pcc, count)


# --------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class SetSizeCurve:
    """Error against (mean) set size for top-K and average-K on one test split (float64 CPU).

    Attributes:
        ks: ``[L]`` the K values.
        thresholds: ``[L]`` average-K thresholds estimated on the calibration split.
        topk_error: ``[L]`` top-K error on the test split (NaN for a non-integer K).
        avgk_error: ``[L]`` average-K error on the test split.
        avgk_mean_set_size: ``[L]`` average-K mean set size on the test split (≈ K).
    """

    ks: Tensor
    thresholds: Tensor
    topk_error: Tensor
    avgk_error: Tensor
    avgk_mean_set_size: Tensor


def error_vs_set_size_curve(
    probs_cal: Tensor,
    probs_test: Tensor,
    target_test: Tensor,
    ks: KLike,
    rule: ThresholdRule = "midpoint",
) -> SetSizeCurve:
    r"""Top-K vs average-K error at each K, thresholds from a separate calibration split.

    :math:`\hat\lambda_K` = :func:`average_k_threshold` (``probs_cal``, K, ``rule``); the average-K
    sets on ``probs_test`` then have a mean size close to (not exactly) K. Top-K uses ``probs_test``.
    """
    _check_scores("probs_cal", probs_cal)
    _check_scores("probs_test", probs_test)
    if probs_cal.shape[1] != probs_test.shape[1]:
        raise ValueError(
            f"probs_cal and probs_test must have the same number of classes; got {probs_cal.shape[1]} and {probs_test.shape[1]}"
        )
    c = probs_test.shape[1]
    values, _ = _as_k_list(ks, c, integer=False, name="ks")
    lam = average_k_threshold(probs_cal, values, rule=rule).reshape(-1)
    rank = top_k_target_rank(probs_test, target_test)
    topk, avgk, size = [], [], []
    for k, t in zip(values, lam):
        topk.append(float((rank >= k).double().mean()) if float(k).is_integer() else float("nan"))
        mask = average_k_sets(probs_test, t)
        avgk.append(float(set_error(mask, target_test)))
        size.append(float(mean_set_size(mask)))
    f64 = torch.float64
    return SetSizeCurve(
        ks=torch.tensor(values, dtype=f64),
        thresholds=lam.detach().cpu().to(f64),
        topk_error=torch.tensor(topk, dtype=f64),
        avgk_error=torch.tensor(avgk, dtype=f64),
        avgk_mean_set_size=torch.tensor(size, dtype=f64),
    )


def plot_error_vs_set_size(curve: SetSizeCurve, path: str | Path | None = None, title: str | None = None) -> Any:
    """Plot error against mean set size for top-K and average-K (matplotlib imported lazily, Agg canvas).

    Returns:
        The ``matplotlib.figure.Figure``; saved to ``path`` when given.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib; install it with `pip install tailwise[plot]`") from err
    fig = Figure(figsize=(4.5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    integer = ~torch.isnan(curve.topk_error)
    ax.plot(curve.ks[integer].numpy(), curve.topk_error[integer].numpy(), marker="o", label="top-K")
    ax.plot(curve.avgk_mean_set_size.numpy(), curve.avgk_error.numpy(), marker="s", label="average-K")
    ax.set_xlabel("mean set size")
    ax.set_ylabel("set error")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=120)
    return fig
