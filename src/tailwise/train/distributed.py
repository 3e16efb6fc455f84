"""Process-group helpers for runs under ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import gc
import os
import sys
import time
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


def shutdown_distributed(timeout: float = 60.0) -> None:
    """Destroy the process group if one is initialised, after every rank has reached this point.

    The teardown is ordered so that no rank tears down what another still uses:

    1. every rank waits at a barrier (skipped while an exception propagates, i.e. when called from a
       ``finally`` block during an error: the other ranks may never reach theirs);
    2. unreachable objects are collected, so that a dropped ``DistributedDataParallel`` reducer or a
       finished work handle releases the group now rather than at interpreter exit;
    3. every rank destroys its group and then reports on the rendezvous store; rank 0, which hosts the
       store when launched without an agent, waits (up to ``timeout`` seconds) for every report before
       it returns, so the store outlives the other ranks' teardown.

    Args:
        timeout: seconds rank 0 waits for the other ranks' reports in step 3.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world, rank = dist.get_world_size(), dist.get_rank()
    orderly = world > 1 and sys.exc_info()[0] is None
    store = _default_store() if orderly else None
    if orderly:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    if store is None:
        return
    try:
        count = store.add(_EXIT_KEY, 1)
        deadline = time.monotonic() + timeout
        while rank == 0 and count < world and time.monotonic() < deadline:
            time.sleep(0.01)
            count = store.add(_EXIT_KEY, 0)
    except RuntimeError:  # a rank's store connection already closed: nothing left to order
        pass


_EXIT_KEY = "tailwise/shutdown"


def _default_store() -> dist.Store | None:
    """The default group's rendezvous store, where this torch build exposes it."""
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    try:
        return getter() if getter is not None else None
    except (RuntimeError, ValueError):
        return None


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
