"""Per-epoch learning-rate factor: linear warm-up then multistep, cosine or constant."""

from __future__ import annotations

import math

from tailwise._validation import check_in_choices

__all__ = ["lr_factor"]


def lr_factor(
    epoch: int,
    *,
    epochs: int,
    name: str = "multistep",
    warmup_epochs: int = 0,
    milestones: list[int] | tuple[int, ...] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at a 0-indexed ``epoch``.

    Warm-up (LDAM-DRW rule): ``(epoch + 1) / warmup_epochs`` for ``epoch < warmup_epochs``. After it:
    ``multistep`` gives ``gamma ** (number of milestones <= epoch)``; ``cosine`` anneals from 1 to
    ``min_factor`` over the epochs after warm-up; ``constant`` gives 1.
    """
    check_in_choices("schedule.name", name, ("multistep", "cosine", "constant"))
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    if name == "multistep":
        return float(gamma ** sum(1 for m in milestones if epoch >= m))
    if name == "cosine":
        span = max(1, epochs - warmup_epochs)
        t = min(1.0, (epoch - warmup_epochs) / span)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0
