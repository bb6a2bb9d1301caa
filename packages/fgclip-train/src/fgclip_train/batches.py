"""An epoch of training batches, from records in memory or streamed from WebDataset shards.

Both sources give every rank the same number of equally sized batches per epoch (the feature gathers and
DeepSpeed's gradient all-reduce need every rank in every step) and start an epoch at any batch, so a resumed
run continues where its checkpoint left off. With two groups (English and Chinese) every global batch holds
one language.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from fgclip_data import FineHARDDataset, FineHARDShards, ImageResize, SampleOptions


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's shuffles: the same on every rank and for a resumed run."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class ResumableBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffling dealt in global batches of ``batch × world``; this rank takes its slice.

    ``groups`` (e.g. the English and the Chinese records) are shuffled and cut into global batches separately,
    so every global batch holds one group only (FG-CLIP 2's bilingual sampler, with shuffling inside each
    language, which the reference lacked); the batches of all groups are then shuffled together. Each group's
    last incomplete global batch is dropped (every rank needs the same batch size for the gathers).
    ``start_batch`` skips the batches a resumed run has already seen, without loading them.
    """

    def __init__(self, size: int, batch: int, world: int, rank: int, seed: int, groups: list[range] | None = None):
        self.batch, self.world, self.rank, self.seed = batch, world, rank, seed
        self.groups = groups or [range(size)]
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise ValueError(f"{size} samples do not fill one global batch of {batch} x {world}")

    def __len__(self) -> int:
        return sum(len(g) // (self.batch * self.world) for g in self.groups)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _plan(self) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Each group's shuffled order (int32 tensors: 4 bytes a sample, not a Python int each, so 12 M samples
        stay at 48 MB) and the epoch's (group, global batch) sequence."""
        g = epoch_generator(self.seed, self.epoch)
        span = self.batch * self.world
        orders, plan = [], []
        for k, group in enumerate(self.groups):
            orders.append(torch.randperm(len(group), generator=g, dtype=torch.int32))  # the int64 permutation
            plan += [(k, b) for b in range(len(group) // span)]
        if len(self.groups) > 1:
            plan = [plan[i] for i in torch.randperm(len(plan), generator=g).tolist()]
        return orders, plan

    def _slice(self, orders: list[torch.Tensor], k: int, start: int, stop: int) -> list[int]:
        group = self.groups[k]
        return [group[i] for i in orders[k][start:stop].tolist()]

    def global_batches(self) -> list[list[int]]:
        orders, plan = self._plan()
        span = self.batch * self.world
        return [self._slice(orders, k, b * span, (b + 1) * span) for k, b in plan]

    def __iter__(self) -> Iterator[list[int]]:
        orders, plan = self._plan()
        span = self.batch * self.world
        for k, b in plan[self.start_batch :]:
            start = b * span + self.rank * self.batch
            yield self._slice(orders, k, start, start + self.batch)


class RecordBatches:
    """Records held in memory (:class:`FineHARDDataset`) dealt by the seeded :class:`ResumableBatchSampler`."""

    def __init__(self, dataset: FineHARDDataset, sampler: ResumableBatchSampler, collate, workers: int) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
        )

    @property
    def resize(self) -> ImageResize:
        return self.dataset.maker.resize

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        self.sampler.set_epoch(epoch, start)
        self.dataset.set_epoch(epoch)
        return iter(self.loader)


class ShardBatches:
    """Batches streamed from shard folders (``fgclip-data shards write``), one folder per language group.

    Each rank × loader worker reads its own share of every folder's samples (:class:`FineHARDShards`); each
    worker drops its last partial batch, and every rank stops after the epoch length of the rank with the
    fewest full batches, so all ranks take the same number of steps. What goes unused in an epoch is each
    worker's last partial batch and, on ranks with more samples, at most one batch per worker; the shard
    order changes every epoch, so it is not the same samples each time. With several folders the epoch's
    sequence of groups is a seeded shuffle, the same on every rank.
    """

    def __init__(
        self,
        folders: list[Path],
        *,
        options: SampleOptions,
        resize: ImageResize,
        collate,
        batch: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 1000,
    ) -> None:
        self.batch, self.seed = batch, seed
        self.resize = resize
        self.datasets = [
            FineHARDShards(folder, options, resize, seed, rank, world, shuffle_buffer) for folder in folders
        ]
        self.steps = [self._steps(d, world, max(1, workers)) for d in self.datasets]
        if sum(self.steps) == 0:
            sizes = ", ".join(f"{f}: {len(d)}" for f, d in zip(folders, self.datasets, strict=True))
            raise ValueError(
                f"the shards ({sizes} samples) do not fill one batch of {batch} on each of {world} rank(s) "
                f"x {max(1, workers)} loader worker(s)"
            )
        self.loaders = [
            DataLoader(
                d,
                batch_size=batch,
                drop_last=True,
                collate_fn=collate,
                num_workers=workers,
                pin_memory=torch.cuda.is_available(),
            )
            for d in self.datasets
        ]

    def _steps(self, dataset: FineHARDShards, world: int, workers: int) -> int:
        """Full batches per epoch of the rank with the fewest (consumer = rank × workers + worker)."""
        consumers = world * workers
        share = dataset.stream.consumer_samples
        return min(
            sum(share(rank * workers + worker, consumers) // self.batch for worker in range(workers))
            for rank in range(world)
        )

    def __len__(self) -> int:
        return sum(self.steps)

    def plan(self, epoch: int) -> list[int]:
        """The group of each step of ``epoch`` (identical on every rank)."""
        groups = [g for g, n in enumerate(self.steps) for _ in range(n)]
        if len(self.steps) == 1:
            return groups
        order = torch.randperm(len(groups), generator=epoch_generator(self.seed, epoch))
        return [groups[i] for i in order.tolist()]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        plan = self.plan(epoch)
        streams = []
        for group, (dataset, loader) in enumerate(zip(self.datasets, self.loaders, strict=True)):
            dataset.resume(epoch, plan[:start].count(group), self.batch)
            streams.append(iter(loader) if group in plan[start:] else None)
        for group in plan[start:]:
            yield next(streams[group])
