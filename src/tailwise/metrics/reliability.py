r"""Reliability diagram: per-bin accuracy against confidence, with the confidence histogram.

The data use exactly the bins of :func:`tailwise.metrics.expected_calibration_error`
(``[0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1]``), so ``ece`` here equals that function's value. The plot
(DeGroot & Fienberg, 1983; Niculescu-Mizil & Caruana, ICML 2005; Guo et al., ICML 2017) needs
matplotlib, imported only when drawing; it renders on a private Agg canvas and never touches
pyplot's global backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tailwise.metrics.calibration import (
    InputKind,
    _bin_sums,
    _check_n_bins,
    _reduce_bins,
    _to_probabilities,
    _top_label,
    calibration_bin_edges,
    calibration_bin_index,
)

__all__ = ["ReliabilityDiagram", "plot_reliability_diagram", "reliability_diagram"]


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin statistics of a reliability diagram (float64 CPU tensors).

    Attributes:
        bin_edges: ``[M + 1]`` edges ``0, 1/M, ..., 1``.
        bin_count: ``[M]`` samples per bin.
        bin_confidence: ``[M]`` mean top-label confidence per bin (NaN for an empty bin).
        bin_accuracy: ``[M]`` accuracy per bin (NaN for an empty bin).
        ece: the l1 expected calibration error.
        mce: the maximum calibration error over non-empty bins.
        accuracy: overall top-1 accuracy.
        mean_confidence: overall mean top-label confidence.
    """

    bin_edges: Tensor
    bin_count: Tensor
    bin_confidence: Tensor
    bin_accuracy: Tensor
    ece: float
    mce: float
    accuracy: float
    mean_confidence: float

    @property
    def n_samples(self) -> int:
        """Number of samples behind the diagram."""
        return int(self.bin_count.sum())


def reliability_diagram(
    probs: Tensor,
    target: Tensor,
    n_bins: int = 15,
    path: str | Path | None = None,
    input: InputKind = "probs",
    title: str | None = None,
) -> ReliabilityDiagram:
    r"""Compute a reliability diagram's data and, when ``path`` is given, save the plot there.

    For each bin :math:`B_m`: :math:`n_m = |B_m|`, :math:`\mathrm{acc}_m` and :math:`\mathrm{conf}_m`
    as in :mod:`tailwise.metrics.calibration`.

    Args:
        probs: ``[N, C]`` probabilities (or logits with ``input="logits"``).
        target: ``[N]`` integer labels.
        n_bins: number of equal-width bins.
        path: where to save the figure (format from the suffix, e.g. ``.png`` / ``.pdf``); ``None``
            computes the data only and needs no matplotlib.
        input: ``"probs"`` or ``"logits"``.
        title: optional figure title.

    Returns:
        The :class:`ReliabilityDiagram` data.
    """
    _check_n_bins(n_bins)
    p = _to_probabilities(probs, target, input, name="probs")
    conf, correct = _top_label(p, target)
    count, conf_sum, corr_sum = _bin_sums(calibration_bin_index(conf, n_bins), conf, correct, n_bins)
    count, conf_sum, corr_sum = count.cpu(), conf_sum.cpu(), corr_sum.cpu()
    nan = torch.full_like(count, float("nan"))
    data = ReliabilityDiagram(
        bin_edges=calibration_bin_edges(n_bins),
        bin_count=count,
        bin_confidence=torch.where(count > 0, conf_sum / count.clamp_min(1.0), nan),
        bin_accuracy=torch.where(count > 0, corr_sum / count.clamp_min(1.0), nan),
        ece=float(_reduce_bins(count, conf_sum, corr_sum, float(conf.numel()), "l1")),
        mce=float(_reduce_bins(count, conf_sum, corr_sum, float(conf.numel()), "max")),
        accuracy=float(correct.mean()),
        mean_confidence=float(conf.mean()),
    )
    if path is not None:
        plot_reliability_diagram(data, path=path, title=title)
    return data


def plot_reliability_diagram(
    data: ReliabilityDiagram, path: str | Path | None = None, title: str | None = None
) -> Any:
    """Draw ``data`` as a two-panel figure (accuracy per bin over the diagonal; confidence histogram).

    Args:
        data: output of :func:`reliability_diagram`.
        path: optional file to save to.
        title: optional figure title.

    Returns:
        The ``matplotlib.figure.Figure`` (attached to an Agg canvas).

    Raises:
        ImportError: matplotlib is not installed (``pip install tailwise[plot]``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib; install it with `pip install tailwise[plot]`") from err

    edges = data.bin_edges.numpy()
    width = edges[1:] - edges[:-1]
    left = edges[:-1]
    acc = torch.nan_to_num(data.bin_accuracy, nan=0.0).numpy()
    conf = torch.nan_to_num(data.bin_confidence, nan=0.0).numpy()
    nonempty = (data.bin_count > 0).numpy()

    fig = Figure(figsize=(4.5, 5.5))
    FigureCanvasAgg(fig)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(left, acc, width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy")
    gap_bottom = [min(a, c) if ne else 0.0 for a, c, ne in zip(acc, conf, nonempty)]
    gap_height = [abs(a - c) if ne else 0.0 for a, c, ne in zip(acc, conf, nonempty)]
    ax.bar(left, gap_height, bottom=gap_bottom, width=width, align="edge", color="tab:red", alpha=0.35,
           edgecolor="tab:red", hatch="//", label="gap")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    ax.text(0.97, 0.03, f"ECE = {100 * data.ece:.2f}%\nMCE = {100 * data.mce:.2f}%", transform=ax.transAxes,
            ha="right", va="bottom", fontsize="small")
    hist.bar(left, data.bin_count.numpy(), width=width, align="edge", edgecolor="black", color="tab:gray")
    hist.axvline(data.accuracy, color="tab:blue", linestyle="-", label="accuracy")
    hist.axvline(data.mean_confidence, color="tab:red", linestyle="--", label="mean confidence")
    hist.set_xlabel("confidence")
    hist.set_ylabel("count")
    hist.legend(loc="upper left", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=120)
    return fig
