"""From a FineHARD record to a training sample: caption choice, box checks and clipping, hard negatives.

Everything here is plain Python over one record, shared by the map-style and the streaming datasets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from math import isfinite
from typing import Literal

from PIL import Image

from fgclip_data.images import BadImage, decode_rgb
from fgclip_data.report import Report
from fgclip_data.schema import FineHARDRecord


@dataclass
class SampleOptions:
    """How records become samples.

    Attributes:
        max_boxes: box slots per image (the reference: 4); the first ``max_boxes`` valid boxes are used.
        negatives: hard negatives required per flagged box (the reference: exactly 10); ``None`` accepts any
            number ≥ 1. A box with another count keeps its region caption but loses its hard negatives.
        region_caption: ``"random"`` (short or long expression, drawn per load, as the reference), ``"short"``
            or ``"long"``.
        short_prefix: prepended to English short captions (the reference: ``"a photo of "``); not added twice.
        lowercase: lower-case every text (the reference lower-cases all but the hard-negative positive).
        min_box_size: boxes narrower or lower than this (normalised units, after clipping) are dropped.
    """

    max_boxes: int = 4
    negatives: int | None = 10
    region_caption: Literal["random", "short", "long"] = "random"
    short_prefix: str = "a photo of "
    lowercase: bool = True
    min_box_size: float = 1e-3


@dataclass
class Sample:
    """One training example, before tokenisation and image processing."""

    image: Image.Image
    caption: str
    short_caption: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    box_captions: list[str] = field(default_factory=list)
    hard_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    hard_texts: list[list[str]] = field(default_factory=list)  # per hard box: positive, then negatives
    chinese: bool = False
    source: str = ""


@dataclass(frozen=True)
class Skipped:
    """A sample that could not be built; collators drop it and count ``reason``."""

    reason: str
    where: str


def clip_box(xyxy, min_size: float) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """(clipped box or None, problem or None) for a normalised box."""
    x1, y1, x2, y2 = map(float, xyxy)
    if 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0:  # the common case (False for NaN): nothing to clip
        if x2 - x1 < min_size or y2 - y1 < min_size:
            return None, "degenerate box (no area inside the image) dropped"
        return (x1, y1, x2, y2), None
    if not (isfinite(x1) and isfinite(y1) and isfinite(x2) and isfinite(y2)):
        return None, "box with NaN/inf coordinates dropped"
    if x2 < x1 or y2 < y1:
        return None, "box with x2 < x1 or y2 < y1 dropped"
    clipped = (min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0), min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0))
    if clipped[2] - clipped[0] < min_size or clipped[3] - clipped[1] < min_size:
        return None, "degenerate box (no area inside the image) dropped"
    return clipped, ("box outside [0, 1] clipped" if clipped != (x1, y1, x2, y2) else None)


def load_image(path, report: Report, where: str, target: int | None = None) -> Image.Image | None:
    """The image as RGB, or None (reported by kind: missing, corrupt, over the pixel limit) when it cannot be used;
    ``target``: the side it will be resized to (huge JPEGs then decode at a reduced scale)."""
    try:
        return decode_rgb(path, target)
    except BadImage as err:
        report.problem(err.reason, where)
    return None


def _caption_choices(short: str, long: str, mode: str) -> list[str]:
    """The region captions a box may draw from: the mode's own (``short``, ``long`` or both), else any non-blank
    one."""
    has_short, has_long = bool(short.strip()), bool(long.strip())
    if mode == "short":
        return [short] if has_short else [long] if has_long else []
    if mode == "long":
        return [long] if has_long else [short] if has_short else []
    return [c for c, usable in ((short, has_short), (long, has_long)) if usable]


def build_regions(
    record: FineHARDRecord, options: SampleOptions, rng: random.Random, report: Report, where: str
) -> tuple[list, list, list, list]:
    """(boxes, box captions, hard boxes, hard texts) of the first ``max_boxes`` usable boxes."""
    boxes, captions, hard_boxes, hard_texts = [], [], [], []
    case = str.lower if options.lowercase else str
    mode, wanted, min_size = options.region_caption, options.negatives, options.min_box_size
    for k, info in enumerate(record.bbox_info):
        if len(boxes) == options.max_boxes:
            break
        box, problem = clip_box(info.bbox[:4], min_size)
        if problem:
            report.problem(problem, where, field=f"bbox_info.{k}.bbox")
        if box is None:
            continue
        short = info.short_expr
        choices = _caption_choices(short, info.long_expr, mode)
        if not choices:
            report.problem("box without a region caption dropped", where, field=f"bbox_info.{k}")
            continue
        boxes.append(box)
        captions.append(case(rng.choice(choices)))
        negatives = info.negatives
        if info.flag_short_neg and not negatives:
            report.problem("flag_short_neg set but no negatives", where, field=f"bbox_info.{k}.short_expr_negs")
        elif negatives:
            wrong = wanted is not None and len(negatives) != wanted
            if wrong or not short.strip() or not all(map(str.strip, negatives)):
                reason = f"{len(negatives)} hard negatives instead of {wanted}" if wrong else "empty hard text"
                report.problem(
                    f"{reason}: negatives of this box ignored", where, field=f"bbox_info.{k}.short_expr_negs"
                )
            else:
                hard_boxes.append(box)
                hard_texts.append([case(short), *map(case, negatives)])
    return boxes, captions, hard_boxes, hard_texts


def unusable(record: FineHARDRecord) -> tuple[str, str] | None:
    """(reason, field) when no sample can be built from ``record`` whatever its image, else None: the one rule that
    shard writers, ``check`` and sample builders share (a writer packs nothing a reader would skip)."""
    for name in ("caption", "short_caption"):
        if not getattr(record, name).strip():
            return "empty caption", name
    return None


def build_sample(
    record: FineHARDRecord,
    image: Image.Image,
    options: SampleOptions,
    rng: random.Random,
    report: Report,
    where: str,
) -> Sample | Skipped:
    """The sample of one record with its (already loaded) image."""
    problem = unusable(record)
    if problem is not None:
        report.problem(problem[0], where, field=problem[1])
        return Skipped(problem[0], where)
    short = record.short_caption
    if not record.chinese and options.short_prefix and not short.lower().startswith(options.short_prefix.strip()):
        short = options.short_prefix + short
    case = str.lower if options.lowercase else str
    boxes, captions, hard_boxes, hard_texts = build_regions(record, options, rng, report, where)
    return Sample(
        image=image,
        caption=case(record.caption),
        short_caption=case(short),
        boxes=boxes,
        box_captions=captions,
        hard_boxes=hard_boxes,
        hard_texts=hard_texts,
        chinese=record.chinese,
        source=where,
    )
