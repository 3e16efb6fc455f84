"""Seeded synthetic label noise.

Every kind draws from a ``torch.Generator`` seeded by ``seed`` and returns :class:`NoisyLabels`: the
noisy labels, the realised noise rate (fraction of labels that changed) and the empirical ``C x C``
transition matrix ``T[i, j] = P(noisy = j | true = i)`` measured on the draw (rows = true class,
columns = noisy class; a class absent from ``labels`` gets an identity row so every row sums to 1).

Kinds (``r`` = ``rate``):

* ``symmetric``: each label is flipped with probability ``r`` to one of the other ``C - 1`` classes,
  uniformly (a flipped label never keeps its class; realised rate ~ ``r``).
* ``uniform``: with probability ``r`` the label is redrawn uniformly from all ``C`` classes (it may keep
  its class; realised rate ~ ``r (C - 1) / C``).
* ``asymmetric_cifar10``: with probability ``r``: truck -> automobile, bird -> airplane, deer -> horse,
  cat <-> dog (Patrini et al. 2017); the other classes are untouched. Needs ``C = 10``.
* ``pair``: with probability ``r`` class ``c`` becomes ``(c + 1) mod C``.
* ``cifar100_next``: with probability ``r`` a CIFAR-100 fine class becomes the next fine class of its
  superclass (cyclically). ``grouping="superclass"`` (default) uses the real CIFAR-100 superclass
  table (``CIFAR100_COARSE``; within a superclass the fine classes are ordered by fine label);
  ``grouping="block"`` uses blocks of 5 consecutive fine labels (0-4, 5-9, ...), which is what the
  widely copied loss-correction code of Patrini et al. does. Needs ``C = 100``.
* ``instance``: instance-dependent noise of Xia et al., "Part-dependent label noise", NeurIPS 2020:
  per-sample flip rates ``q_i`` from a normal ``N(r, norm_std^2)`` truncated to ``[0, 1]``; a random
  projection ``W ~ N(0, 1)`` of shape ``(C, D, C)``; the flip distribution of sample ``i`` with true
  class ``y`` is ``q_i softmax(x_i W[y])`` over the other classes and ``1 - q_i`` on ``y``. Needs the
  ``features`` (flattened; ``uint8`` inputs are divided by 255, then every feature is standardised over
  the samples, matching the normalised image tensors the official code projects). ``rate = 0`` gives
  clean labels (the truncated normal around 0 would still flip some).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_in_choices, check_positive, check_probability, describe

__all__ = ["CIFAR100_COARSE", "NOISE_KINDS", "NoisyLabels", "apply_noise", "transition_matrix"]

NOISE_KINDS = ("symmetric", "uniform", "asymmetric_cifar10", "pair", "cifar100_next", "instance")

#: Superclass (coarse label) of each CIFAR-100 fine label 0..99 (from the dataset's ``coarse_labels``).
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

# CIFAR-10 class indices: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck.
_CIFAR10_ASYM = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


@dataclass
class NoisyLabels:
    """Result of a noise injection.

    Attributes:
        labels: ``int64`` noisy labels ``(N,)``.
        noise_rate: realised fraction of labels that differ from the input labels.
        transition: ``float64`` ``(C, C)`` empirical transition matrix, rows = true, cols = noisy,
            each row summing to 1.
    """

    labels: Tensor
    noise_rate: float
    transition: Tensor


def _check_labels(labels: Sequence[int] | Tensor | np.ndarray, num_classes: int) -> Tensor:
    if isinstance(labels, Tensor):
        y = labels.detach().cpu()
    else:
        arr = np.asarray(labels)
        y = torch.as_tensor(arr.astype(np.int64) if arr.size == 0 else arr)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D sequence of integer class labels; got {describe(labels)}")
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}; "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


def transition_matrix(clean: Tensor, noisy: Tensor, num_classes: int) -> Tensor:
    """Empirical row-normalised transition matrix ``T[i, j] = #(clean = i, noisy = j) / #(clean = i)``.

    Rows of classes absent from ``clean`` are identity rows, so every row sums to 1.

    Args:
        clean: 1-D ``int64`` true labels.
        noisy: 1-D ``int64`` noisy labels of the same length.
        num_classes: ``C``.

    Returns:
        ``float64`` tensor ``(C, C)``.
    """
    clean = clean.detach().cpu().to(torch.int64)
    noisy = noisy.detach().cpu().to(torch.int64)
    if clean.shape != noisy.shape or clean.ndim != 1:
        raise ValueError(f"clean and noisy must be 1-D of the same length; got {describe(clean)} and {describe(noisy)}")
    c = int(num_classes)
    joint = torch.bincount(clean * c + noisy, minlength=c * c).view(c, c).to(torch.float64)
    rows = joint.sum(1, keepdim=True)
    eye = torch.eye(c, dtype=torch.float64)
    return torch.where(rows > 0, joint / rows.clamp_min(1), eye)


def _fixed_target_map(kind: str, num_classes: int, grouping: str) -> Tensor:
    """``target[c]``: the class a flipped label of class ``c`` becomes (itself when it never flips)."""
    target = torch.arange(num_classes, dtype=torch.int64)
    if kind == "pair":
        return (target + 1) % num_classes
    if kind == "asymmetric_cifar10":
        if num_classes != 10:
            raise ValueError(f"asymmetric_cifar10 noise needs num_classes=10; got num_classes={num_classes}")
        for src, dst in _CIFAR10_ASYM.items():
            target[src] = dst
        return target
    # cifar100_next
    if num_classes != 100:
        raise ValueError(f"cifar100_next noise needs num_classes=100; got num_classes={num_classes}")
    check_in_choices("grouping", grouping, ("superclass", "block"))
    groups: dict[int, list[int]] = {}
    for fine in range(100):
        key = CIFAR100_COARSE[fine] if grouping == "superclass" else fine // 5
        groups.setdefault(key, []).append(fine)
    for members in groups.values():
        for pos, fine in enumerate(members):
            target[fine] = members[(pos + 1) % len(members)]
    return target


def _truncated_normal(n: int, mean: float, std: float, low: float, high: float, gen: torch.Generator) -> Tensor:
    """``n`` draws of ``N(mean, std^2)`` truncated to ``[low, high]`` by inverting the normal CDF."""
    if std <= 0:
        return torch.full((n,), min(max(mean, low), high), dtype=torch.float64)
    a = torch.special.ndtr(torch.tensor((low - mean) / std, dtype=torch.float64))
    b = torch.special.ndtr(torch.tensor((high - mean) / std, dtype=torch.float64))
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    p = (a + u * (b - a)).clamp(1e-300, 1 - 1e-16)
    return (mean + std * torch.special.ndtri(p)).clamp(low, high)


def _instance_noise(y: Tensor, rate: float, num_classes: int, features: Tensor, norm_std: float,
                    gen: torch.Generator) -> Tensor:
    n = y.numel()
    if not isinstance(features, Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.shape[0] != n:
        raise ValueError(f"features must have one row per label ({n}); got {describe(features)}")
    feats = features.detach().cpu().reshape(n, -1)
    feats = feats.to(torch.float32) / 255.0 if feats.dtype == torch.uint8 else feats.to(torch.float32)
    if n > 1:
        feats = (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-6)
    d = feats.shape[1]
    q = _truncated_normal(n, rate, norm_std, 0.0, 1.0, gen)
    w = torch.randn(num_classes, d, num_classes, generator=gen, dtype=torch.float32)
    probs = torch.empty(n, num_classes, dtype=torch.float64)
    for c in range(num_classes):
        rows = torch.nonzero(y == c).flatten()
        if rows.numel() == 0:
            continue
        logits = (feats[rows] @ w[c]).to(torch.float64)
        logits[:, c] = -torch.inf
        p = torch.softmax(logits, dim=1) * q[rows, None]
        p[:, c] = 1.0 - q[rows]
        probs[rows] = p
    return torch.multinomial(probs, 1, generator=gen).flatten()


def apply_noise(
    kind: str,
    labels: Sequence[int] | Tensor | np.ndarray,
    rate: float,
    num_classes: int,
    seed: int = 0,
    features: Tensor | np.ndarray | None = None,
    *,
    grouping: str = "superclass",
    norm_std: float = 0.1,
) -> NoisyLabels:
    """Inject seeded synthetic label noise of one of :data:`NOISE_KINDS` (see the module docstring).

    Args:
        kind: one of ``symmetric``, ``uniform``, ``asymmetric_cifar10``, ``pair``, ``cifar100_next``,
            ``instance``.
        labels: 1-D integer true labels.
        rate: noise rate ``r`` in ``[0, 1]`` (per-sample flip probability; the mean flip rate for
            ``instance``).
        num_classes: ``C``.
        seed: seed of the ``torch.Generator`` that draws the noise.
        features: per-sample inputs ``(N, ...)``; required by ``instance``, ignored otherwise.
        grouping: ``cifar100_next`` only: ``"superclass"`` or ``"block"``.
        norm_std: ``instance`` only: standard deviation of the truncated normal of flip rates.

    Returns:
        :class:`NoisyLabels` with the noisy labels, the realised rate and the empirical transition.

    Raises:
        ValueError: unknown kind, rate outside ``[0, 1]``, labels out of range, a kind that needs a
            specific ``num_classes``, ``instance`` without features.
    """
    check_in_choices("kind", kind, NOISE_KINDS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    num_classes = int(num_classes)
    rate = check_probability("rate", rate)
    y = _check_labels(labels, num_classes)
    gen = torch.Generator().manual_seed(int(seed))
    n = y.numel()
    if kind == "instance":
        if features is None:
            raise ValueError("instance noise needs features (the inputs, shape (N, ...)); got features=None")
        check_positive("norm_std", norm_std, allow_zero=True)
        noisy = _instance_noise(y, rate, num_classes, features, float(norm_std), gen) if n and rate > 0 else y.clone()
    else:
        flip = torch.rand(n, generator=gen) < rate
        if kind == "symmetric":
            offset = torch.randint(1, num_classes, (n,), generator=gen)
            candidate = (y + offset) % num_classes
        elif kind == "uniform":
            candidate = torch.randint(0, num_classes, (n,), generator=gen)
        else:
            candidate = _fixed_target_map(kind, num_classes, grouping)[y]
        noisy = torch.where(flip, candidate, y)
    realised = float((noisy != y).to(torch.float64).mean()) if n else 0.0
    return NoisyLabels(labels=noisy, noise_rate=realised, transition=transition_matrix(y, noisy, num_classes))
