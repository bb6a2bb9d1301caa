"""Decoding and preprocessing in DataLoader workers: a part's items -> model-ready batches (unreadable images
become skip records, never errors).

Each image is preprocessed alone (FG-CLIP 2: at the patch budget of its own size, as a one-image call), so an
embedding does not depend on which images share its batch; :func:`collate` pads NaFlex patch sequences to the
longest of the batch.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from fgclip_model.embed.inputs import Item


def read_image(source: str | tuple[str, int, int]) -> Image.Image:
    """The RGB image of an item (a path, or ``(tar, offset, size)``); raises ``ValueError`` naming the reason."""
    try:
        if isinstance(source, tuple):
            tar, offset, size = source
            with open(tar, "rb") as f:
                f.seek(offset)
                data = io.BytesIO(f.read(size))
        else:
            data = source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(data) as image:
                return image.convert("RGB")
    except FileNotFoundError as err:
        raise ValueError("missing image") from err
    except Image.DecompressionBombError as err:
        raise ValueError("image over the pixel limit") from err
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as err:
        raise ValueError(f"corrupt image ({type(err).__name__})") from err


@dataclass
class Sample:
    """One decoded item: its index in the rank's list, the processor's tensors (batch dim 1), its boxes, and the
    image size; or ``error`` when it could not be read."""

    index: int
    inputs: dict[str, torch.Tensor] | None = None
    boxes: torch.Tensor | None = None
    size: tuple[int, int] | None = None
    error: str | None = None


class ItemDataset(Dataset):
    """Items -> :class:`Sample` (decoded and preprocessed in the worker that loads it)."""

    def __init__(self, items: Sequence[Item], processor, image_kwargs: dict | None = None) -> None:
        self.items, self.processor, self.image_kwargs = items, processor, image_kwargs or {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        if item.image is None:
            return Sample(index)
        try:
            image = read_image(item.image)
            inputs = dict(self.processor(images=[image], **self.image_kwargs))
        except ValueError as err:
            return Sample(index, error=str(err))
        boxes = torch.tensor([r.box for r in item.regions], dtype=torch.float32).reshape(-1, 4)
        return Sample(index, inputs, boxes, (image.height, image.width))


def _pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [1, ...] tensors along dim 0, zero-padding dim 1 to the longest (NaFlex patch sequences)."""
    if len({t.shape for t in tensors}) == 1:
        return torch.cat(tensors)
    longest = max(t.shape[1] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), longest, *tensors[0].shape[2:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[1]] = t[0]
    return out


@dataclass
class Batch:
    """A collated batch of one part: the indices of the good samples, their inputs and boxes, and the skips."""

    first: int
    indices: list[int]
    inputs: dict[str, torch.Tensor]
    boxes: list[torch.Tensor]
    skipped: list[tuple[int, str]]
    texts_only: list[int]


def collate(samples: list[Sample]) -> Batch:
    """Good samples' inputs concatenated (NaFlex sequences padded to the longest); skips and text-only rows kept
    by index."""
    good = [s for s in samples if s.inputs is not None]
    inputs = {}
    if good:
        inputs = {
            k: (_pad_cat if good[0].inputs[k].ndim > 1 and k != "spatial_shapes" else torch.cat)(
                [s.inputs[k] for s in good]
            )
            for k in good[0].inputs
        }
    return Batch(
        min(s.index for s in samples),
        [s.index for s in good],
        inputs,
        [s.boxes for s in good],
        [(s.index, s.error) for s in samples if s.error is not None],
        [s.index for s in samples if s.inputs is None and s.error is None],
    )


class PartBatches(Sampler[list[int]]):
    """Batches of indices that never cross a part: ``parts`` is [(part id, start, stop)] over the dataset."""

    def __init__(self, parts: Sequence[tuple[int, int, int]], batch_size: int) -> None:
        self.parts, self.batch_size = list(parts), batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for _, start, stop in self.parts:
            for begin in range(start, stop, self.batch_size):
                yield list(range(begin, min(begin + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for _, start, stop in self.parts)
