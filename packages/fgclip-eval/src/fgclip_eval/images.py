"""Image loading for the benchmarks: paths (or PIL images) decoded and preprocessed in DataLoader workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from PIL import Image

from fgclip_data.images import BadImage, decode_rgb

ImageItem = str | os.PathLike | Image.Image


class UnreadableImage(FileNotFoundError):
    """A benchmark image is missing or cannot be decoded (benchmarks do not skip images: the denominator is fixed)."""


def open_rgb(item: ImageItem) -> Image.Image:
    """A PIL RGB image from a path or an image; a clear error naming the file otherwise (missing, corrupt,
    truncated, or over Pillow's pixel limit — a decompression bomb)."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    try:
        return decode_rgb(item)
    except BadImage as err:
        raise UnreadableImage(f"{err.reason}: {item}") from err


class _Batches:
    """Batches of items as a map-style dataset, so that workers load and preprocess whole batches."""

    def __init__(self, items: Sequence, batch_size: int, prepare: Callable[[list], object]) -> None:
        self.items, self.batch_size, self.prepare = items, batch_size, prepare

    def __len__(self) -> int:
        return (len(self.items) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int):
        return self.prepare(list(self.items[index * self.batch_size : (index + 1) * self.batch_size]))


def batches(items: Sequence, batch_size: int, prepare: Callable[[list], object], workers: int, desc: str | None = None):
    """Yield ``prepare(batch)`` for consecutive batches of ``items``, prepared in ``workers`` processes (in order),
    with a progress bar when ``desc`` is given."""
    import torch
    from tqdm.auto import tqdm

    dataset = _Batches(items, batch_size, prepare)
    if workers > 0 and len(dataset) > 1:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=min(workers, len(dataset)), prefetch_factor=2
        )
    else:
        loader = (dataset[i] for i in range(len(dataset)))
    yield from tqdm(loader, total=len(dataset), desc=desc, disable=desc is None, leave=False, unit="batch")


def default_workers() -> int:
    return min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class View(Sequence):
    """Items ``indices`` of ``items``, read only when indexed (so lazy datasets decode in the loader workers)."""

    def __init__(self, items: Sequence, indices: Sequence[int]) -> None:
        self.items, self.indices = items, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.items[self.indices[i]] for i in range(*index.indices(len(self)))]
        return self.items[self.indices[index]]
