"""Sharding of feature extraction over ``torchrun`` processes: each rank encodes one contiguous slice and every
rank gets all rows back in the original order, so metrics are computed on identical matrices everywhere."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> str:
    """Join the ``torchrun`` process group (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE`` > 1; return the device of
    this rank (``cuda:LOCAL_RANK`` for CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shard(n: int) -> range:
    """The contiguous slice of ``range(n)`` this rank encodes (the first ``n % world`` ranks get one more)."""
    rank, size = world()
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's [n_r, ...] rows in rank order (ranks may hold different row counts, including none:
    an empty rank's trailing shape is taken from the others)."""
    _, size = world()
    if size == 1:
        return local
    device = torch.device("cpu") if dist.get_backend() == "gloo" else local.device
    shapes: list = [None] * size
    dist.all_gather_object(shapes, (tuple(local.shape), local.dtype))
    counts = [shape[0] for shape, _ in shapes]
    trailing, dtype = next(((s[1:], d) for s, d in shapes if s[0] > 0), (tuple(local.shape[1:]), local.dtype))
    padded = torch.zeros((max(counts), *trailing), dtype=dtype, device=device)
    if local.shape[0]:
        padded[: local.shape[0]] = local.to(device=device, dtype=dtype)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(local.device)


def is_main() -> bool:
    return world()[0] == 0
