"""ShareGPT4V (``share-captioner_coco_lcs_sam_1246k_1107.json``): records, image folders, captions, checks.

Each record is LLaVA-style: ``image`` (relative to the ``data/`` root of the ShareGPT4V tree) and
``conversations`` whose second turn is the Share-Captioner long caption. The short caption is its first
sentence (text before the first ". "), as Long-CLIP trains. The first 1000 records are the ShareGPT4V-1k
benchmark; training uses the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ijson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fgclip_data.finehard.paths import safe_join
from fgclip_data.report import Report

# first path component of `image` -> the sub-folders the ShareGPT4V data/ tree keeps those images in
FOLDERS: dict[str, tuple[str, ...]] = {
    "coco": ("coco/train2017",),
    "sam": ("sam/images",),
    "llava": ("llava/llava_pretrain/images",),
    "gqa": ("gqa/images",),
    "ocr_vqa": ("ocr_vqa/images",),
    "textvqa": ("textvqa/train_images",),
    "vg": ("vg/VG_100K", "vg/VG_100K_2"),
    "share_textvqa": ("share_textvqa/images",),
    "web-celebrity": ("web-celebrity/images",),
    "web-landmark": ("web-landmark/images",),
    "wikiart": ("wikiart/images",),
}
BENCHMARK_SIZE = 1000


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    speaker: str = Field(alias="from")
    value: str


class ShareGPT4VRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | int | None = None
    image: str
    conversations: list[Turn] = Field(min_length=2)

    @property
    def caption(self) -> str:
        """The long caption (second turn), newlines turned into spaces."""
        return self.conversations[1].value.replace("\n", " ").strip()

    @property
    def short_caption(self) -> str:
        return first_sentence(self.caption)

    @property
    def source(self) -> str:
        return self.image.split("/", 1)[0]


def first_sentence(caption: str) -> str:
    """Text before the first ". " (the whole caption when there is none), without a final period."""
    return caption.split(". ", 1)[0].rstrip(".").strip()


@dataclass(frozen=True)
class ShareGPT4VItem:
    index: int
    record: ShareGPT4VRecord


def iter_sharegpt4v(path: str | Path, report: Report | None = None) -> Iterator[ShareGPT4VItem]:
    """Stream the records of the JSON array; invalid ones are reported (file, index, field) and skipped."""
    report = report if report is not None else Report()
    index = -1
    with open(path, "rb") as f:
        try:
            for index, raw in enumerate(ijson.items(f, "item", use_float=True)):
                try:
                    record = ShareGPT4VRecord.model_validate(raw)
                except ValidationError as err:
                    first = err.errors()[0]
                    report.problem(first["msg"], str(path), index, ".".join(map(str, first["loc"])))
                    continue
                if not record.caption:
                    report.problem("empty caption", str(path), index, "conversations.1.value")
                    continue
                report.count("records")
                yield ShareGPT4VItem(index, record)
        except ijson.JSONError as err:
            report.problem(f"malformed JSON ({err}); rest of the file skipped", str(path), index + 1)


def image_path(record: ShareGPT4VRecord, data_root: str | Path) -> Path:
    """The image file of a record under the ShareGPT4V ``data/`` root."""
    return safe_join(data_root, record.image)


def check(path: str | Path, data_root: str | Path, report: Report | None = None, missing_out=None) -> Report:
    """Count the records and missing images of every source folder; unknown sources and paths outside the
    data root are reported. ``missing_out`` (a writable text file) receives the missing paths, one a line."""
    report = report if report is not None else Report()
    per_source: Counter = Counter()
    for item in iter_sharegpt4v(path, report):
        record = item.record
        if record.source not in FOLDERS:
            report.problem(f"unknown source folder {record.source!r}", str(path), item.index, "image")
        elif not any(record.image.startswith(prefix + "/") for prefix in FOLDERS[record.source]):
            report.problem(
                f"image outside the {record.source} folders {FOLDERS[record.source]}", str(path), item.index, "image"
            )
        try:
            file = image_path(record, data_root)
        except ValueError as err:
            report.problem(str(err), str(path), item.index, "image")
            continue
        per_source[record.source] += 1
        if not file.is_file():
            report.problem(f"missing image ({record.source})", str(path), item.index, "image")
            if missing_out is not None:
                missing_out.write(f"{file}\n")
        else:
            report.count(f"images found ({record.source})")
    for source, n in per_source.items():
        report.count(f"records ({source})", n)
    return report


def to_finehard(item: ShareGPT4VItem) -> dict:
    """A FineHARD-format record (no boxes) for the shared datasets and collators; ``f_path`` is the
    ``image`` path relative to the ShareGPT4V data root."""
    return {"f_path": item.record.image, "caption": item.record.caption, "short_caption": item.record.short_caption}


def convert(
    path: str | Path, out_dir: str | Path, report: Report | None = None, val_size: int = BENCHMARK_SIZE
) -> Report:
    """Write the records as FineHARD-format JSON Lines: ``val.jsonl`` (the first ``val_size``: ShareGPT4V-1k)
    and ``train.jsonl`` (the rest), so the shared datasets, ``stage2`` and ``finetune`` read them with
    ``--data.images`` pointing at the ShareGPT4V ``data/`` root. Written atomically."""
    import json
    import os

    report = report if report is not None else Report()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {name: out_dir / f".{name}.jsonl.tmp" for name in ("val", "train")}
    with open(tmp["val"], "w", encoding="utf-8") as val, open(tmp["train"], "w", encoding="utf-8") as train:
        for item in iter_sharegpt4v(path, report):
            target = val if item.index < val_size else train
            target.write(json.dumps(to_finehard(item), ensure_ascii=False) + "\n")
            report.count("val records" if item.index < val_size else "train records")
    for name, file in tmp.items():
        os.replace(file, out_dir / f"{name}.jsonl")
    return report
