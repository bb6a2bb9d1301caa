"""Cross-rank feature gathering for contrastive losses, kept apart from the loss math."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_with_grad(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``features`` [b, ...] from every rank, keeping the autograd graph.

    Returns the rows of all ranks concatenated in rank order and the offset of this rank's rows. Gradients
    flow back to the producing rank (``torch.distributed.nn.functional.all_gather``). Ranks may hold different
    numbers of rows (a batch that lost a corrupt sample): the sizes are exchanged first and the rows padded to
    the largest for the collective. Without an initialised process group (or with one rank) this is the
    identity.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    sizes = _batch_sizes(features.shape[0], features.device)
    rank, largest = dist.get_rank(), max(sizes)
    local = features.contiguous()
    if local.shape[0] < largest:
        local = torch.cat([local, local.new_zeros(largest - local.shape[0], *local.shape[1:])])
    gathered = all_gather(local)
    rows = torch.cat([part[:n] for part, n in zip(gathered, sizes, strict=True)], dim=0)
    return rows, sum(sizes[:rank])


def _batch_sizes(rows: int, device: torch.device) -> list[int]:
    """The local batch size of every rank, in rank order (one small collective)."""
    mine = torch.tensor([rows], device=device)
    sizes = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def no_gather(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A gather function that keeps the local batch (for local losses and tests)."""
    return features, 0


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a (detached) tensor over all ranks; the identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()
