"""Which share of a data stream this process and data-loader worker reads: ``rank × workers + worker``."""

from __future__ import annotations

import torch.distributed as dist
from torch.utils.data import get_worker_info


def shard_of(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(shard index, shard count) of this process and data-loader worker: records are dealt round-robin over
    ``world_size × num_workers`` shards, so every record is read by exactly one worker of one rank."""
    if rank is None or world_size is None:
        initialised = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if initialised else 0
        world_size = dist.get_world_size() if initialised else 1
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info else (1, 0)
    return rank * workers + worker, world_size * workers
