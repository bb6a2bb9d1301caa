"""torch datasets over FineHARD-format data (FineHARD itself, FG-Shapes, converted ShareGPT4V).

Both datasets yield :class:`~fgclip_data.finehard.samples.Sample` objects (PIL image + texts + normalised boxes)
or :class:`~fgclip_data.finehard.samples.Skipped` markers for bad records, which the collators drop and count.
Tokenisation and image processing happen in the collators, with the tokenizer / image processor passed in.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from fgclip_data.finehard.paths import resolve_image_path
from fgclip_data.finehard.reader import RecordRef, iter_records, read_records
from fgclip_data.finehard.samples import SampleOptions, Skipped, build_sample
from fgclip_data.images import BadImage, decode_rgb
from fgclip_data.report import Report, where
from fgclip_data.sharding import shard_of
from fgclip_data.shards import ShardStream
from fgclip_data.threads import thread_map


class ImageResize:
    """How images are resized in the dataset, before the image processor.

    ``square``: squash to ``square x square`` (FG-CLIP v1: aspect not kept, so normalised boxes stay valid).
    ``tiny``: squash images whose shorter side is below ``tiny[0]`` to ``tiny[1]`` squared (FG-CLIP 2's rule,
    128 -> 512). Neither: keep the image.
    """

    def __init__(self, square: int | None = None, tiny: tuple[int, int] | None = None) -> None:
        self.square, self.tiny = square, tiny

    @property
    def target(self) -> int | None:
        """The side images end up near (lets huge JPEGs decode at a reduced scale), when it is known."""
        return self.square

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.square:
            return image.resize((self.square, self.square), Image.Resampling.BICUBIC)
        if self.tiny and min(image.size) < self.tiny[0]:
            return image.resize((self.tiny[1], self.tiny[1]), Image.Resampling.BICUBIC)
        return image


class _SampleMaker:
    def __init__(self, image_root, options, resize, seed) -> None:
        self.image_root = Path(image_root)
        self.options = options or SampleOptions()
        self.resize = resize or ImageResize()
        self.seed = seed
        self.epoch = 0
        self.report = Report()

    def make(self, ref: RecordRef):
        at = where(ref.file, ref.index)
        try:
            path = resolve_image_path(ref.record.f_path, self.image_root)
        except ValueError as err:
            self.report.problem(str(err), ref.file, ref.index, "f_path")
            return Skipped("f_path outside the image root", at)
        try:
            image = decode_rgb(path, self.resize.target)
        except BadImage as err:
            self.report.problem(err.reason, at)
            return Skipped(err.reason, at)  # by kind: missing, corrupt (...), over the pixel limit
        return self.build(ref.record, image, at, f"{ref.file}:{ref.index}")

    def build(self, record, image: Image.Image, at: str, key: str):
        """The sample of a record and its decoded image; the random region-caption choices are seeded by
        (seed, epoch, ``key``), so they are the same whichever worker builds the sample."""
        rng = random.Random(zlib.crc32(f"{self.seed}:{self.epoch}:{key}".encode()))
        return build_sample(record, self.resize(image), self.options, rng, self.report, at)


class RecordDataset(Dataset):
    """A map-style dataset of samples built from indexed records (``record(i)`` and ``__len__`` in subclasses) by
    one :class:`_SampleMaker` (``self.maker``): image decoding, seeded region-caption draws, the report."""

    maker: _SampleMaker

    @property
    def report(self) -> Report:
        return self.maker.report

    def set_epoch(self, epoch: int) -> None:
        """Redraw the random region-caption choices (seeded by epoch)."""
        self.maker.epoch = epoch

    def record(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index: int):
        return self.maker.make(self.record(index))

    def __getitems__(self, indices: list[int]) -> list:
        """A batch of samples (torch's fetcher calls this with a batch's indices), decoded on the batch threads
        (:func:`fgclip_data.threads.thread_map`): the same samples in the same order as one by one."""
        return thread_map(self.__getitem__, indices)


class FineHARDDataset(RecordDataset):
    """Map-style dataset over records held in memory (FG-Shapes, validation splits, moderate corpora).

    ``source``: a record file, a directory of them, or a ``.txt`` listing; ``image_root``: the folder that
    ``f_path`` resolves against (``grit-12m/`` for FineHARD). Call :meth:`set_epoch` to redraw the random
    region-caption choices.
    """

    def __init__(
        self,
        source: str | Path | list[RecordRef],
        image_root: str | Path,
        options: SampleOptions | None = None,
        resize: ImageResize | None = None,
        seed: int = 0,
        report: Report | None = None,
    ) -> None:
        self.maker = _SampleMaker(image_root, options, resize, seed)
        self.records = source if isinstance(source, list) else read_records(source, report or self.maker.report)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int):
        return self.records[index]


class FineHARDStream(IterableDataset):
    """Streaming dataset: records are parsed as the files are read (never all in memory) and dealt round-robin
    to (rank, worker) shards. Bad records and images are skipped, counted, and passed on as ``Skipped``."""

    def __init__(
        self,
        source: str | Path,
        image_root: str | Path,
        options: SampleOptions | None = None,
        resize: ImageResize | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.source = source
        self.maker = _SampleMaker(image_root, options, resize, seed)
        self.rank, self.world_size = rank, world_size

    @property
    def report(self) -> Report:
        return self.maker.report

    def set_epoch(self, epoch: int) -> None:
        self.maker.epoch = epoch

    def __iter__(self) -> Iterator:
        shard, shards = shard_of(self.rank, self.world_size)
        for position, ref in enumerate(iter_records(self.source, self.maker.report)):
            if position % shards == shard:
                yield self.maker.make(ref)


class FineHARDShards(IterableDataset):
    """Training samples streamed from WebDataset shards (``fgclip-data shards write``): split over ranks × workers
    with every sample read once per epoch, decoded, resized and built in the workers; :meth:`resume` continues
    an epoch mid-way. Same samples as :class:`FineHARDDataset` over the source records. ``shuffle_buffer``: see
    :class:`~fgclip_data.shards.ShardStream`."""

    def __init__(
        self,
        folder: str | Path,
        options: SampleOptions | None = None,
        resize: ImageResize | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 0,
    ) -> None:
        self.maker = _SampleMaker(folder, options, resize, seed)
        self.stream = ShardStream(
            folder, make=self._build, seed=seed, rank=rank, world_size=world_size, shuffle_buffer=shuffle_buffer
        )

    def _build(self, record, image, at: str):
        return self.maker.build(record, image, at, key=at)  # a bound method: picklable for spawned workers

    @property
    def report(self) -> Report:
        return self.maker.report

    def set_epoch(self, epoch: int) -> None:
        self.maker.epoch = epoch
        self.stream.set_epoch(epoch)

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        self.set_epoch(epoch)
        self.stream.resume(epoch, batches_done, batch_size)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator:
        return iter(self.stream)
