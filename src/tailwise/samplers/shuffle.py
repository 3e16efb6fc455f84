"""Epoch-seeded random permutation sampler, distributed-aware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from tailwise._validation import describe
from tailwise.registry import SAMPLERS

__all__ = ["ShuffleSampler", "epoch_generator", "shard_indices"]


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, epoch, stream)``.

    Every per-epoch random draw of tailwise's samplers and trainer comes from such a generator, so a
    run resumed at an epoch boundary replays exactly the draws of an uninterrupted run.
    """
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + int(stream) * 104_729) % (2**63 - 1))
    return g


def shard_indices(indices: Tensor, num_replicas: int, rank: int, drop_last: bool = False) -> Tensor:
    """The strided shard ``indices[rank::num_replicas]`` after padding (or trimming) to a multiple.

    Global position ``j`` goes to rank ``j % num_replicas``, so the k-th local batch of size
    ``B / num_replicas`` on every rank together holds exactly the k-th global batch of size ``B``.
    """
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must lie in [0, num_replicas) with num_replicas >= 1; got rank={rank}, num_replicas={num_replicas}")
    n = indices.numel()
    if num_replicas == 1:
        return indices
    if drop_last:
        indices = indices[: n - n % num_replicas]
    elif n % num_replicas:
        pad = num_replicas - n % num_replicas
        indices = torch.cat([indices, indices[:pad]])
    return indices[rank::num_replicas]


class _EpochShardedSampler(Sampler[int]):
    """Shared mechanics of tailwise's samplers: a global draw per ``(seed, epoch)``, strided over ranks.

    A subclass calls :meth:`_init_sharding` from its constructor and implements :meth:`global_indices`
    (the draw of ``self.epoch``, from :func:`epoch_generator`) and :meth:`_global_size` (its length).
    """

    def _init_sharding(self, num_replicas: int, rank: int, seed: int, drop_last: bool) -> None:
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        shard_indices(torch.arange(1), self.num_replicas, self.rank)  # validates rank / num_replicas

    def _global_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def global_indices(self) -> Tensor:  # pragma: no cover - abstract
        """The draw of this epoch before sharding (int64)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch``."""
        self.epoch = int(epoch)

    def indices(self) -> Tensor:
        """This rank's indices for the current epoch (int64 tensor)."""
        return shard_indices(self.global_indices(), self.num_replicas, self.rank, self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        n, w = self._global_size(), self.num_replicas
        return n // w if self.drop_last else -(-n // w)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and seed: all that determines the draw (other settings are rebuilt by the constructor)."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])


@SAMPLERS.register("shuffle")
class ShuffleSampler(_EpochShardedSampler):
    """Random permutation of ``range(num_items)`` each epoch, drawn from ``(seed, epoch)``.

    With ``num_replicas > 1`` every rank draws the same global permutation and keeps its strided
    shard (see :func:`shard_indices`), like ``torch.utils.data.DistributedSampler``.

    Args:
        labels: training labels (only their number is used); or give ``num_items``.
        num_items: dataset size, when ``labels`` is not given.
        num_replicas: number of processes.
        rank: this process's rank.
        seed: base seed.
        shuffle: ``False`` gives the identity order (evaluation).
        drop_last: trim instead of pad so every rank gets the same count.
    """

    def __init__(
        self,
        labels: Tensor | None = None,
        num_items: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if labels is None and num_items is None:
            raise ValueError("ShuffleSampler needs labels or num_items; got neither")
        n = int(labels.numel()) if labels is not None else int(num_items)  # type: ignore[arg-type]
        if n < 1:
            raise ValueError(f"num_items must be >= 1; got {describe(n)}")
        self.num_items = n
        self.shuffle = bool(shuffle)
        self._init_sharding(num_replicas, rank, seed, drop_last)

    def _global_size(self) -> int:
        return self.num_items

    def global_indices(self) -> Tensor:
        """The permutation of this epoch before sharding."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        return torch.randperm(self.num_items, generator=epoch_generator(self.seed, self.epoch))
