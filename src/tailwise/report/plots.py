"""Plots of run results (matplotlib is an optional dependency, imported here only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_per_class_accuracy"]


def plot_per_class_accuracy(
    class_counts: Sequence[float],
    per_class_accuracy: Sequence[float] | Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Per-class test accuracy against the class's training count (log x axis), one series per run.

    Args:
        class_counts: training count of each class.
        per_class_accuracy: one accuracy per class, or ``{label: accuracies}`` for several methods.
        path: output PNG path (folders are created).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = per_class_accuracy if isinstance(per_class_accuracy, Mapping) else {"accuracy": per_class_accuracy}
    order = sorted(range(len(class_counts)), key=lambda c: -class_counts[c])
    fig, ax = plt.subplots(figsize=(6 if len(series) <= 1 else 9, 4.5))
    for i, (label, acc) in enumerate(series.items()):
        style = ("-", "--", ":")[(i // 10) % 3]  # the colour cycle has 10 colours
        ax.plot([class_counts[c] for c in order], [acc[c] for c in order], marker="o", markersize=4,
                linestyle=style, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training samples in class (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left", ncol=1 + len(series) // 16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
