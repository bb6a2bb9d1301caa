"""Training data: records (FineHARD layout, FG-Shapes by default), tokenizer, collator, resumable sampler."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import AutoTokenizer, CLIPImageProcessor

from fgclip_data import FGCLIP2Collator, FGCLIPCollator, FineHARDDataset, ImageResize, SampleOptions, read_records
from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_data.tokenizer import build_word_tokenizer
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor

from .config import CACHE, TrainConfig


@dataclass
class DataSources:
    train: Path
    val: Path | None
    images: Path
    fgshapes: Path | None = None
    train_cn: Path | None = None


def resolve_sources(config: TrainConfig) -> DataSources:
    """The configured record folders, or FG-Shapes generated into the cache (once)."""
    data = config.data
    if data.train:
        return DataSources(
            Path(data.train),
            Path(data.val) if data.val else None,
            Path(data.images),
            train_cn=Path(data.train_cn) if data.train_cn else None,
        )
    if data.fgshapes_n < 2:
        raise ValueError("data.train is not set and data.fgshapes_n < 2: nothing to train on")
    folder = CACHE / f"fgshapes-n{data.fgshapes_n}-s{data.fgshapes_seed}-{data.fgshapes_lang}"
    generate(folder, GenerateOptions(n=data.fgshapes_n, seed=data.fgshapes_seed, lang=data.fgshapes_lang))
    jsonfiles = folder / "jsonfiles"
    cn = jsonfiles / "train_cn" if data.fgshapes_lang == "both" else None
    return DataSources(jsonfiles / "train", jsonfiles / "val", folder / "grit-12m", folder, cn)


def corpus(records) -> Iterator[str]:
    for ref in records:
        rec = ref.record
        yield rec.caption
        yield "a photo of " + rec.short_caption
        for box in rec.bbox_info:
            yield box.short_expr
            yield box.long_expr
            yield from box.negatives


def load_tokenizer(config: TrainConfig, records) -> object:
    """``data.tokenizer``, else the init checkpoint's, else a word-level tokenizer built for these records."""
    for folder in (config.data.tokenizer, config.model.init):
        if folder and any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(folder)
    from .families import get_family

    return build_word_tokenizer(corpus(records), get_family(config.model.family).tokenizer_layout)


def sample_options(config: TrainConfig) -> SampleOptions:
    return SampleOptions(
        max_boxes=config.data.max_boxes,
        negatives=config.data.negatives,
        region_caption=config.data.region_caption,
        short_prefix=config.data.short_prefix,
    )


def build_dataset(config: TrainConfig, records, images: Path, image_size: int | None) -> FineHARDDataset:
    resize = ImageResize(square=image_size) if image_size else ImageResize()
    return FineHARDDataset(records, images, sample_options(config), resize, seed=config.schedule.seed)


def build_fgclip_collator(config: TrainConfig, tokenizer, model_config, image_size: int | None):
    """The FG-CLIP v1 / FG-CLIP 2 stage-2 collator of the configured family."""
    losses = config.loss
    common = {
        "max_boxes": config.data.max_boxes,
        "add_box_loss": losses.region,
        "use_hard_neg": losses.hard_negatives,
    }
    if config.model.family == "fgclip":
        text = model_config.text_config
        processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size)
        return FGCLIPCollator(
            tokenizer,
            processor,
            short_length=text.max_position_embeddings,
            long_length=model_config.long_max_position_embeddings,
            **common,
        )
    text = model_config.text_config
    return FGCLIP2Collator(
        tokenizer,
        FGCLIP2ImageProcessor(patch_size=model_config.vision_config.patch_size),
        max_num_patches=config.data.max_num_patches,
        short_length=text.max_position_embeddings,
        long_length=text.longtext_len,
        **common,
    )


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

    def global_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        span = self.batch * self.world
        batches = []
        for group in self.groups:
            order = [group[i] for i in torch.randperm(len(group), generator=g).tolist()]
            batches += [order[b * span : (b + 1) * span] for b in range(len(order) // span)]
        if len(self.groups) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_batch :]:
            yield batch[self.rank * self.batch : (self.rank + 1) * self.batch]


@dataclass
class TrainData:
    sources: DataSources
    tokenizer: object
    train: FineHARDDataset
    val_records: list
    sampler: ResumableBatchSampler
    loader: DataLoader

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)


def read_sources(config: TrainConfig):
    sources = resolve_sources(config)
    records = read_records(sources.train)
    if sources.train_cn is not None:
        chinese = [r for r in read_records(sources.train_cn) if r.record.chinese]
        if not chinese:
            raise ValueError(f"{sources.train_cn}: no Chinese records (is_cn) found")
        records = [r for r in records if not r.record.chinese] + chinese
    val = read_records(sources.val) if sources.val else []
    if config.data.val_limit is not None:
        val = val[: config.data.val_limit]
    return sources, records, val


def build_data(config: TrainConfig, sources, records, val, tokenizer, model_config, rank: int, world: int) -> TrainData:
    from .families import get_family

    family = get_family(config.model.family)
    image_size = None
    if family.square_images:
        image_size = config.data.image_size or model_config.vision_config.image_size
    groups = None
    if sources.train_cn is not None:  # read_sources put the Chinese records after the English ones
        english = sum(1 for r in records if not r.record.chinese)
        groups = [range(english), range(english, len(records))]
    dataset = build_dataset(config, records, sources.images, image_size)
    sampler = ResumableBatchSampler(len(dataset), config.schedule.batch_size, world, rank, config.schedule.seed, groups)
    collate = family.build_collator(config, tokenizer, model_config, image_size)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.data.workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
    return TrainData(sources, tokenizer, dataset, val, sampler, loader)


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    if config.schedule.max_steps is not None:
        return config.schedule.max_steps
    return max(1, math.ceil(config.schedule.epochs * steps_per_epoch / config.schedule.grad_accum))


def fgshapes_vocabulary(sources: DataSources) -> dict | None:
    if sources.fgshapes is None:
        return None
    return json.loads((sources.fgshapes / "manifest.json").read_text())["vocabulary"]
