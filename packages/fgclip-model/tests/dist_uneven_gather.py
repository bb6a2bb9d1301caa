"""Run by test_distributed_gather.py under ``torchrun --nproc_per_node 2``: ranks holding 2 and 3 rows gather
them with :func:`gather_with_grad`; rank r writes what it saw to ``OUT_DIR/rank{r}.pt``.

Usage: python dist_uneven_gather.py OUT_DIR
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fgclip_model.distributed import gather_with_grad


def rows_of(rank: int) -> torch.Tensor:
    return torch.arange((rank + 2) * 3, dtype=torch.float32).reshape(rank + 2, 3) + 100 * rank


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    local = rows_of(rank).requires_grad_(True)
    gathered, offset = gather_with_grad(local)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    torch.save({"gathered": gathered.detach(), "offset": offset, "grad": local.grad}, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
