"""A :class:`~fgclip_data.importers.base.Candidate` → a FineHARD record (and the image bytes to write), for every
source alike: the image is decoded once (a bad one is a counted skip), captions chosen by
:func:`~fgclip_data.importers.base.choose_captions`, boxes normalised or refused, hard negatives made or taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fgclip_data.images import BadImage, decode_rgb
from fgclip_data.importers.base import (
    Candidate,
    caption_from_categories,
    choose_captions,
    clean_text,
    normalise_box,
    numbers,
    record_unit,
)
from fgclip_data.importers.negatives import hard_negatives, supplied_negatives
from fgclip_data.report import Report

IMAGE_FOLDER = "images"


@dataclass
class ConvertOptions:
    """How candidates become records.

    Attributes:
        negatives: hard negatives per box (FineHARD: 10); 0 makes none. Fewer when fewer are truly false.
        seed: seeds the negatives (and the split).
        categories: category names of the whole data set (category-swap negatives), besides the source's own.
        size_tolerance: pixels by which an annotation's declared image size may differ from the image's.
        chinese: the captions are Chinese: records carry ``is_cn`` (FG-CLIP 2 trains them as ``data.train_cn``).
    """

    negatives: int = 10
    seed: int = 0
    categories: list[str] = field(default_factory=list)
    size_tolerance: int = 1
    chinese: bool = False


def _load_bytes(candidate: Candidate, report: Report) -> bytes | None:
    if isinstance(candidate.image, bytes):
        return candidate.image
    try:
        return Path(candidate.image).read_bytes()
    except FileNotFoundError:
        report.problem("missing image", candidate.where, field=str(candidate.image))
    except OSError as err:
        report.problem(f"unreadable image ({type(err).__name__})", candidate.where, field=str(candidate.image))
    return None


def _image_size(candidate: Candidate, data: bytes, report: Report) -> tuple[int, int] | None:
    try:
        image = decode_rgb(data, name=str(candidate.where))
    except BadImage as err:
        report.problem(err.reason, candidate.where)
        return None
    return image.size


def convert(candidate: Candidate, options: ConvertOptions, report: Report) -> tuple[dict, bytes] | None:
    """(FineHARD record, image bytes) of one candidate, or None after reporting why it is skipped."""
    data = _load_bytes(candidate, report)
    if data is None:
        return None
    size = _image_size(candidate, data, report)
    if size is None:
        return None
    box_size: tuple[int, int] | None = size
    if candidate.size and any(abs(a - b) > options.size_tolerance for a, b in zip(candidate.size, size, strict=True)):
        box_size = None  # which size the pixel boxes refer to is not certain
    boxes = _boxes(candidate, box_size, size, options, report)
    long, short = choose_captions(candidate.captions, candidate.short_caption)
    if not long:
        long = short = caption_from_categories([b["category"] for b in boxes if b.get("category")])
        if long:
            report.count("captions made from box categories")
    if not long:
        report.problem("no caption (and no box to make one from)", candidate.where, field="caption")
        return None
    for box in boxes:
        box.pop("category", None)
    record = {
        "f_path": f"{candidate.key}{candidate.suffix}",
        "caption": long,
        "short_caption": short,
        "bbox_info": boxes,
    }
    if options.chinese:
        record["is_cn"] = True
    return record, data


def _boxes(candidate: Candidate, box_size, image_size, options: ConvertOptions, report: Report) -> list[dict]:
    unit = record_unit(candidate.regions, candidate.box_unit)
    categories = sorted({*options.categories})
    in_image = [r.category or clean_text(r.phrase) for r in candidate.regions]
    out: list[dict] = []
    for k, region in enumerate(candidate.regions):
        phrase = clean_text(region.phrase)
        if not phrase:
            report.problem(
                "box with an empty region caption / category name dropped", candidate.where, field=region.field
            )
            continue
        values = numbers(region.bbox)
        if values is None:
            report.problem("box is not 4 numbers; dropped", candidate.where, field=region.field)
            continue
        if unit == "pixel" and candidate.size and box_size is None:
            report.problem(
                "box in pixels but the annotation's image size is not the image's; dropped",
                f"{candidate.where} (declared {candidate.size}, image {image_size})",
                field=region.field,
            )
            continue
        box, problem = normalise_box(values, region.fmt, unit, box_size)
        if problem:
            report.problem(f"{problem}; dropped", candidate.where, field=region.field)
            continue
        if unit == "pixel":
            report.count("boxes converted from pixels")
        info: dict = {"bbox": box, "short_expr": phrase, "long_expr": region.long_phrase or ""}
        if region.negatives is not None:
            negatives, dropped = supplied_negatives(phrase, region.negatives)
            if dropped:
                report.problem(
                    "supplied hard negative empty, repeated or equal to the region caption; dropped",
                    candidate.where,
                    field=region.field,
                )
            report.count("boxes with supplied negatives")
        elif options.negatives:
            negatives = hard_negatives(
                phrase,
                options.negatives,
                seed=f"{options.seed}/{candidate.key}/{k}",
                category=region.category,
                categories=categories,
                in_image=in_image,
            )
            if len(negatives) < options.negatives:
                report.count(f"boxes with fewer than {options.negatives} negatives (no more truly false rewrites)")
        else:
            negatives = []
        if negatives:
            info["flag_short_neg"] = 1
            info["short_expr_negs"] = {f"n{j}": n for j, n in enumerate(negatives)}
        else:
            info["flag_short_neg"] = 0
        if region.category:
            info["category"] = region.category
        report.count("boxes")
        out.append(info)
    return out
