"""Cross-rank feature gathering for contrastive losses, kept apart from the loss math."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_with_grad(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``features`` [b, ...] from every rank, keeping the autograd graph.

    Returns the rows of all ranks concatenated in rank order and the offset of this rank's rows. Gradients
    flow back to the producing rank (``torch.distributed.nn.functional.all_gather``). Without an initialised
    process group (or with one rank) this is the identity. Every rank must pass the same local batch size.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    gathered = all_gather(features.contiguous())
    return torch.cat(gathered, dim=0), dist.get_rank() * features.shape[0]


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
