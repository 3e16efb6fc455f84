"""Process-group helpers for runs under ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_gather_tensor", "all_reduce_mean", "init_distributed", "shutdown_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the default process group from torchrun's environment, if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown_distributed() -> None:
    """Destroy the process group if one is initialised, after every rank has reached this point.

    Without the barrier a rank may tear its group down while another still talks to it (rank 0 hosts
    the rendezvous store); with gloo that intermittently aborts a process at exit. Called while an
    exception propagates (from a ``finally`` block), it skips the barrier: the other ranks may never
    reach theirs.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1 and sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity on one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def all_gather_tensor(value: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor of possibly different first-dimension sizes from every rank, in rank order."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    world = dist.get_world_size()
    size = torch.tensor([value.shape[0]], device=value.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_n = int(max(int(s) for s in sizes))
    padded = torch.zeros((max_n, *value.shape[1:]), dtype=value.dtype, device=value.device)
    padded[: value.shape[0]] = value
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])
