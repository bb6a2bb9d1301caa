"""Training data: the sources (FineHARD-layout records or shard folders, FG-Shapes by default), tokenizer,
collator and the epoch batches."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from fgclip_data import FineHARDDataset, ImageResize, SampleOptions, read_records
from fgclip_data.fgshapes import FGShapesFolder
from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_data.schema import FineHARDRecord
from fgclip_data.shards import iter_shard_records
from fgclip_data.store import StoreError, StoreReader, is_store
from fgclip_data.store.dataset import FineHARDStore
from fgclip_data.tokenizer import build_word_tokenizer

from .batches import RecordBatches, ResumableBatchSampler, ShardBatches
from .config import TrainConfig


@dataclass
class DataSources:
    train: Path | None
    val: Path | None
    images: Path | None
    fgshapes: Path | None = None
    train_cn: Path | None = None
    shards: list[Path] = field(default_factory=list)  # shard folders: the only / English group, then Chinese


def resolve_sources(config: TrainConfig) -> DataSources:
    """The configured shard folders or record folders, or FG-Shapes generated into the cache (once)."""
    data = config.data
    if data.shards:
        shards = [Path(data.shards)] + ([Path(data.shards_cn)] if data.shards_cn else [])
        images = Path(data.images) if data.images else None
        return DataSources(None, Path(data.val) if data.val else None, images, shards=shards)
    if data.train:
        return DataSources(
            Path(data.train),
            Path(data.val) if data.val else None,
            Path(data.images),
            train_cn=Path(data.train_cn) if data.train_cn else None,
        )
    if data.fgshapes_n < 2:
        raise ValueError("data.train is not set and data.fgshapes_n < 2: nothing to train on")
    shapes = FGShapesFolder.cached(data.fgshapes_n, data.fgshapes_seed, data.fgshapes_lang)
    generate(shapes.root, GenerateOptions(n=data.fgshapes_n, seed=data.fgshapes_seed, lang=data.fgshapes_lang))
    cn = shapes.train_cn if data.fgshapes_lang == "both" else None
    return DataSources(shapes.train, shapes.val, shapes.images, shapes.root, cn)


def corpus(records: Iterable[FineHARDRecord]) -> Iterator[str]:
    for rec in records:
        yield rec.caption
        yield "a photo of " + rec.short_caption
        for box in rec.bbox_info:
            yield box.short_expr
            yield box.long_expr
            yield from box.negatives


def tokenizer_source(config: TrainConfig) -> str:
    """Where :func:`load_tokenizer` takes the run's tokenizer from, in words (for messages)."""
    for name, folder in (("data.tokenizer", config.data.tokenizer), ("model.init", config.model.init)):
        if folder and any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return f"{name} {folder}"
    return "the tokenizer built for the training records"


def load_tokenizer(config: TrainConfig, records: Iterable[FineHARDRecord], layout: str) -> object:
    """``data.tokenizer``, else the init checkpoint's, else a word-level tokenizer built for these records
    (read only in that last case) in the family's special-token ``layout``."""
    for folder in (config.data.tokenizer, config.model.init):
        if folder and any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(folder)
    return build_word_tokenizer(corpus(records), layout)


def training_records(sources: DataSources, records: list | None) -> Iterator[FineHARDRecord]:
    """The training records of :func:`read_sources` as plain records; shards are read lazily (JSON only)."""
    if sources.shards:
        return itertools.chain.from_iterable(map(iter_shard_records, sources.shards))
    return (ref.record for ref in records)


def sample_options(config: TrainConfig) -> SampleOptions:
    return SampleOptions(
        max_boxes=config.data.max_boxes,
        negatives=config.data.negatives,
        region_caption=config.data.region_caption,
        short_prefix=config.data.short_prefix,
    )


def image_resize(image_size: int | None) -> ImageResize:
    """Squash to ``image_size`` (FG-CLIP v1's square inputs), or keep the aspect ratio (NaFlex)."""
    return ImageResize(square=image_size) if image_size else ImageResize()


def build_dataset(config: TrainConfig, records, images: Path, image_size: int | None) -> FineHARDDataset:
    """The map-style dataset of ``records``: RecordRefs in memory, or a record store's reader."""
    kind = FineHARDStore if isinstance(records, StoreReader) else FineHARDDataset
    return kind(records, images, sample_options(config), image_resize(image_size), seed=config.schedule.seed)


@dataclass
class TrainData:
    sources: DataSources
    tokenizer: object
    val_records: list
    batches: RecordBatches | ShardBatches
    collate: object

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def resize(self) -> ImageResize:
        return self.batches.resize

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """This rank's batches of ``epoch`` from batch ``start`` on."""
        return self.batches.epoch(epoch, start)


def read_sources(config: TrainConfig) -> tuple[DataSources, list | None, list]:
    """The sources, the training records (None for shards: they are streamed) and the validation records."""
    sources = resolve_sources(config)
    val = read_records(sources.val) if sources.val else []
    if config.data.val_limit is not None:
        val = val[: config.data.val_limit]
    if sources.shards:
        return sources, None, val
    if is_store(sources.train):  # a record store: mapped, not read (FineHARDStore serves the samples)
        if sources.train_cn is not None:
            raise StoreError(
                f"data.train {sources.train} is a record store: data.train_cn (monolingual bilingual batches) "
                "needs JSON records for both; leave data.train_cn out or give JSON records"
            )
        return sources, StoreReader(sources.train).open(), val  # checked here, mapped again by each process
    records = read_records(sources.train)
    if sources.train_cn is not None:
        chinese = [r for r in read_records(sources.train_cn) if r.record.chinese]
        if not chinese:
            raise ValueError(f"{sources.train_cn}: no Chinese records (is_cn) found")
        records = [r for r in records if not r.record.chinese] + chinese
    return sources, records, val


def build_data(
    config: TrainConfig,
    family,
    *,
    sources: DataSources,
    records,
    val,
    tokenizer,
    model_config,
    rank: int = 0,
    world: int = 1,
) -> TrainData:
    """The epoch batches of this rank: streamed from ``sources.shards``, or dealt from ``records`` (the
    :class:`RecordRef` list of :func:`read_sources`), collated by ``family``'s collator."""
    image_size = None
    if family.square_images:
        image_size = config.data.image_size or model_config.vision_config.image_size
    collate = family.build_collator(config, tokenizer, model_config, image_size)
    batch, workers = config.schedule.batch_size, config.data.workers
    if sources.shards:
        batches = ShardBatches(
            sources.shards,
            options=sample_options(config),
            resize=image_resize(image_size),
            collate=collate,
            batch=batch,
            rank=rank,
            world=world,
            workers=workers,
            seed=config.schedule.seed,
            shuffle_buffer=config.data.shuffle_buffer,
        )
        return TrainData(sources, tokenizer, val, batches, collate)
    groups = None
    if sources.train_cn is not None:  # read_sources put the Chinese records after the English ones
        english = sum(1 for r in records if not r.record.chinese)
        groups = [range(english), range(english, len(records))]
    dataset = build_dataset(config, records, sources.images, image_size)
    sampler = ResumableBatchSampler(len(dataset), batch, world, rank, config.schedule.seed, groups)
    return TrainData(sources, tokenizer, val, RecordBatches(dataset, sampler, collate, workers), collate)


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    if config.schedule.max_steps is not None:
        return config.schedule.max_steps
    return max(1, math.ceil(config.schedule.epochs * steps_per_epoch / config.schedule.grad_accum))


def fgshapes_vocabulary(sources: DataSources) -> dict | None:
    return None if sources.fgshapes is None else FGShapesFolder(sources.fgshapes).vocabulary
