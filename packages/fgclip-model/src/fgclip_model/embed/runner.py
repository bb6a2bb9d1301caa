"""The ``embed`` job: items -> parts of embeddings, sharded over ranks, resumable, with a progress bar.

The items are cut into parts of ``part_size`` in input order; part ``p`` belongs to rank ``p % world_size``
(``RANK`` / ``WORLD_SIZE`` from the environment, as torchrun sets them; no process group is needed). A rank skips
its parts that have a marker, clears and redoes the others. Batches never cross a part, and every image is
preprocessed alone, so the files do not depend on the number of ranks.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fgclip_model.embed import writer
from fgclip_model.embed.encode import encode_images, encode_texts, model_dim, normalise
from fgclip_model.embed.inputs import InputOptions, Item, find_source, list_items
from fgclip_model.embed.loader import Batch, ItemDataset, PartBatches, collate

# test hook: exit (as a kill would) after this many batches, or (``rename:N``) after part N's files are renamed
# into place but before its marker
FAULT_ENV = "FGCLIP_EMBED_FAULT"


@dataclass
class EmbedConfig:
    """Settings of one ``embed`` run.

    Args:
        model: checkpoint folder, ``.pt`` file or hub id (anything ``fgclip_model.load`` reads).
        input: an image folder, WebDataset tar(s), a table (CSV/TSV/Parquet/JSONL), FineHARD records or a text file.
        out: the output folder (clip-retrieval's layout; created; resumed when it exists).
        input_format: the input kind (``folder``, ``webdataset``, ``table``, ``finehard``, ``text``); detected
            when ``None``.
        backend: ``eager``, ``bf16``, ``compile`` or ``onnx`` (see ``fgclip_model.backends``).
        device: ``cpu``, ``cuda`` (each rank takes ``cuda:LOCAL_RANK``) or a device string.
        batch_size: images per model call.
        workers: DataLoader worker processes decoding and preprocessing images (0: in the main process).
        part_size: items per output part (the unit of resuming and of sharding).
        fp16: store embeddings as float16 (half the disk; computed in float32).
        normalise: L2-normalise the embeddings (what inner-product indexes expect).
        regions: embed the boxes of records (``None``: when the family has region features and items have boxes).
        text: embed captions into ``text_emb`` (``None``: when every item has a caption and there is a tokenizer).
        text_walk: the text walk of captions (``short`` or ``long``; families with walks).
        image_root, path_column, caption_column, caption_field: see :class:`~fgclip_model.embed.inputs.InputOptions`.
        progress: show a progress bar.
    """

    model: str
    input: str
    out: str
    input_format: str | None = None
    backend: str = "eager"
    device: str = "cpu"
    batch_size: int = 32
    workers: int = 2
    part_size: int = 10_000
    fp16: bool = False
    normalise: bool = True
    regions: bool | None = None
    text: bool | None = None
    text_walk: str = "short"
    image_root: str | None = None
    path_column: str | None = None
    caption_column: str | None = None
    caption_field: str = "short_caption"
    progress: bool = True


@dataclass
class EmbedResult:
    """What one rank did: parts written and found done, rows, regions and skipped images, and its speed."""

    rank: int
    world_size: int
    parts: int
    parts_written: list[int] = field(default_factory=list)
    parts_already_done: list[int] = field(default_factory=list)
    images: int = 0
    texts: int = 0
    regions: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    wait_seconds: float = 0.0
    first_batch_seconds: float = 0.0  # the first batch's time (a compiled backend compiles there)
    first_batch_images: int = 0

    @property
    def steady_images_per_second(self) -> float:
        """Images per second after the first batch."""
        seconds = self.seconds - self.first_batch_seconds
        return (self.images - self.first_batch_images) / seconds if seconds > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def wait_share(self) -> float:
        """Share of the run's time spent waiting for decoded images."""
        return self.wait_seconds / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} unreadable (listed in skipped/)" if self.skipped else ""
        regions = f", {self.regions} regions" if self.regions else ""
        rows = f"{self.images} images" if self.images or not self.texts else f"{self.texts} texts"
        return (
            f"rank {self.rank}/{self.world_size}: {rows}{regions}{skipped} in {len(self.parts_written)} parts "
            f"({len(self.parts_already_done)} already done) of {self.parts}; {self.images_per_second:.1f} images/s, "
            f"{100 * self.wait_share:.0f}% of the time waiting for images"
        )


def rank_world() -> tuple[int, int]:
    """``RANK`` and ``WORLD_SIZE`` from the environment (0 and 1 when unset)."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as err:
        raise ValueError(f"RANK / WORLD_SIZE must be integers ({err})") from err
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def _device(name: str) -> torch.device:
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def load_model(model: str, backend: str = "eager", device: str = "cpu"):
    """``(model, processor, family, model id)``: any checkpoint through ``fgclip_model`` on ``device`` and
    ``backend``; the id is the absolute path of a local checkpoint, else the hub id."""
    from fgclip_model.auto import detect_family, resolve
    from fgclip_model.auto import load as load_eager
    from fgclip_model.backends import with_backend

    path = resolve(model)
    family = detect_family(path)
    eager, processor = load_eager(path)
    model_id = str(Path(model).resolve()) if Path(model).exists() else str(model)
    return with_backend(eager.to(_device(device)), backend), processor, family, model_id


def _plan(n_items: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part, start, stop) over the item list."""
    parts = max(1, math.ceil(n_items / part_size))
    return [(p, p * part_size, min((p + 1) * part_size, n_items)) for p in range(parts)]


def _fault() -> tuple[str, int] | None:
    value = os.environ.get(FAULT_ENV)
    if not value:
        return None
    kind, _, n = value.rpartition(":")
    return (kind or "batch"), int(n)


def _cast(x: torch.Tensor, config: EmbedConfig) -> np.ndarray:
    x = normalise(x) if config.normalise else x.float()
    return x.cpu().numpy().astype(np.float16 if config.fp16 else np.float32)


class _PartBuffer:
    """Rows of one part, gathered batch by batch in input order."""

    def __init__(self) -> None:
        self.image: list[np.ndarray] = []
        self.text: list[np.ndarray] = []
        self.region: list[np.ndarray] = []
        self.metadata: list[dict[str, Any]] = []
        self.region_metadata: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []

    def data(self, dim: int, dtype, has_image: bool, has_text: bool, has_regions: bool) -> writer.PartData:
        def stack(chunks: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype)

        return writer.PartData(
            stack(self.image) if has_image else None,
            stack(self.text) if has_text else None,
            self.metadata,
            stack(self.region) if has_regions else None,
            self.region_metadata,
            self.skipped,
        )


def _metadata(item: Item, with_caption: bool) -> dict[str, Any]:
    row = {"key": item.key, "image_path": item.image_path}
    if with_caption:
        row["caption"] = item.caption
    return {**row, **item.extra}


def embed(config: EmbedConfig) -> EmbedResult:
    """Run (or resume) this rank's share of an ``embed`` job; see :class:`EmbedConfig`."""
    rank, world = rank_world()
    writer.arrow()  # the extra is there before any work starts
    options = InputOptions(config.image_root, config.path_column, config.caption_column, config.caption_field)
    source = find_source(config.input, config.input_format)
    items = list_items(config.input, source.name, options)
    model, processor, family, model_id = load_model(config.model, config.backend, config.device)
    from fgclip_model.auto import FAMILIES

    has_image = any(item.image is not None for item in items)
    has_text = config.text
    if has_text is None:
        has_text = processor.tokenizer is not None and all(item.caption is not None for item in items)
    elif has_text and processor.tokenizer is None:
        raise ValueError(f"{config.model} has no tokenizer: captions cannot be embedded (drop --text)")
    has_regions = config.regions
    boxed = any(item.regions for item in items)
    if has_regions is None:
        has_regions = FAMILIES[family].regions and boxed and has_image
    elif has_regions and not FAMILIES[family].regions:
        raise ValueError(f"the {family} family has no region features: drop --regions")
    if not has_image and not has_text:
        raise ValueError(f"{config.input}: nothing to embed (no images, and no captions with a tokenizer)")
    dim = model_dim(model, processor, family)
    plan = _plan(len(items), config.part_size)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "family": family,
        "dim": dim,
        "normalised": config.normalise,
        "dtype": "float16" if config.fp16 else "float32",
        "model": model_id,
        "part_size": config.part_size,
        "items": len(items),
        "parts": len(plan),
        "regions": bool(has_regions),
        "image": has_image,
        "text": bool(has_text),
        "text_walk": config.text_walk,
        "source": source.name,
        "input": str(Path(config.input).resolve()),
    }
    writer.check_or_write_info(out, info)

    result = EmbedResult(rank, world, len(plan))
    mine = [p for p in plan if p[0] % world == rank]
    done = set(writer.done_parts(out))
    result.parts_already_done = [p for p, _, _ in mine if p in done]
    todo = [p for p in mine if p[0] not in done]
    writer.clean_tmp(out, rank)
    for part, _, _ in todo:
        writer.clear_part(out, part, len(plan))
    flat: list[Item] = []
    ranges = []
    for part, start, stop in todo:
        ranges.append((part, len(flat), len(flat) + stop - start))
        flat.extend(items[start:stop])
    if not flat:
        return result

    dataset = ItemDataset(flat, processor, {"per_image_budget": True} if FAMILIES[family].naflex else {})
    loader = DataLoader(
        dataset,
        batch_sampler=PartBatches(ranges, config.batch_size),
        collate_fn=collate,
        num_workers=config.workers,
        worker_init_fn=_one_thread if config.workers else None,
    )
    starts = {start: part for part, start, _ in ranges}
    ends = {part: stop for part, _, stop in ranges}
    fault = _fault()
    dtype = np.float16 if config.fp16 else np.float32
    bar = _bar(len(flat), rank, world, config.progress)
    buffer, part, batches = _PartBuffer(), None, 0
    begin = time.perf_counter()
    iterator = iter(loader)
    while True:
        tick = time.perf_counter()
        try:
            batch: Batch = next(iterator)
        except StopIteration:
            break
        result.wait_seconds += time.perf_counter() - tick
        if batch.first in starts:
            part = starts[batch.first]
        _embed_batch(model, processor, family, config, flat, batch, buffer, has_text, has_regions, result)
        batches += 1
        if batches == 1:
            result.first_batch_seconds, result.first_batch_images = time.perf_counter() - begin, result.images
        if fault == ("batch", batches):
            os._exit(17)
        bar.update(len(batch.indices) + len(batch.skipped) + len(batch.texts_only))
        last = max([*batch.indices, *(i for i, _ in batch.skipped), *batch.texts_only])
        if last + 1 == ends[part]:
            hook = (lambda p=part: os._exit(17)) if fault == ("rename", part) else None
            data = buffer.data(dim, dtype, has_image, has_text, has_regions)
            writer.write_part(out, part, len(plan), data, rank, hook)
            result.parts_written.append(part)
            buffer = _PartBuffer()
    bar.close()
    result.seconds = time.perf_counter() - begin
    writer.clean_tmp(out, rank)
    return result


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _bar(total: int, rank: int, world: int, show: bool):
    from tqdm.auto import tqdm

    desc = f"embed rank {rank}/{world}" if world > 1 else "embed"
    return tqdm(total=total, unit="img", desc=desc, disable=not show, file=sys.stderr, dynamic_ncols=True)


def _embed_batch(model, processor, family, config, flat, batch, buffer, has_text, has_regions, result) -> None:
    for index, reason in batch.skipped:
        item = flat[index]
        buffer.skipped.append({"key": item.key, "image_path": item.image_path, "reason": reason})
        result.skipped.append((item.key, reason))
    rows = batch.indices or batch.texts_only
    if not rows:
        return
    if batch.indices:
        boxes = batch.boxes if has_regions else None
        images, regions = encode_images(model, batch.inputs, boxes)
        buffer.image.append(_cast(images, config))
        result.images += len(rows)
        if regions is not None:
            for index, feats in zip(batch.indices, regions, strict=True):
                item = flat[index]
                for k, region in enumerate(item.regions):
                    x1, y1, x2, y2 = region.box
                    buffer.region_metadata.append(
                        {"key": item.key, "image_path": item.image_path, "region": k,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2, "caption": region.caption}
                    )  # fmt: skip
                if len(feats):
                    buffer.region.append(_cast(feats, config))
                result.regions += len(feats)
    else:
        result.texts += len(rows)
    if has_text:
        texts = encode_texts(model, processor, [flat[i].caption for i in rows], family, config.text_walk)
        buffer.text.append(_cast(texts, config))
    buffer.metadata.extend(_metadata(flat[i], has_text) for i in rows)


def result_json(result: EmbedResult) -> dict[str, Any]:
    out = asdict(result)
    out.update(
        images_per_second=result.images_per_second,
        steady_images_per_second=result.steady_images_per_second,
        wait_share=result.wait_share,
    )
    return out
