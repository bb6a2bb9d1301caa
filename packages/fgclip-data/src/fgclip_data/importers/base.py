"""What every importer shares: the source-neutral candidate record, the registry of sources, the caption rule
and the box rule.

A source module only reads its own layout and yields :class:`Candidate` objects (image bytes or path, captions,
regions with boxes *as the source wrote them*); everything that decides what a FineHARD record holds — which
caption is long and which short, how boxes are normalised and which are refused, hard negatives — happens once,
in :mod:`fgclip_data.importers.convert`, for every source alike.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from fgclip_data.report import DataError, Report

BoxFormat = Literal["xyxy", "xywh"]
BoxUnit = Literal["auto", "pixel", "normalized"]


@dataclass
class Region:
    """One box of a source record, before normalisation.

    Attributes:
        bbox: the coordinates as the source wrote them (``fmt``, pixels or normalised).
        phrase: the region caption (becomes ``short_expr``); for detection sets the category name.
        long_phrase: a longer region caption when the source has one (``long_expr``).
        category: the box's category name when the source has categories (category-swap negatives).
        negatives: hard negatives made elsewhere (a column / field of the source); replaces the generated ones.
        fmt: ``xyxy`` (corners) or ``xywh`` (COCO: corner + size).
        field: where the box is in the source record, for the report.
    """

    bbox: Any
    phrase: str
    long_phrase: str = ""
    category: str | None = None
    negatives: list[str] | None = None
    fmt: BoxFormat = "xyxy"
    field: str = "bbox"


@dataclass
class Candidate:
    """A source record before conversion: an image (path or bytes), captions and regions.

    ``key`` is unique within the source and names the output image (``images/<key><suffix>``). ``captions`` are
    the source's captions in its order; ``short_caption`` an explicit short one when the source has it.
    ``size`` is the image size the annotation declares (``(width, height)``), checked against the image.
    """

    key: str
    where: str
    image: Path | bytes
    suffix: str = ".jpg"
    captions: list[str] = field(default_factory=list)
    short_caption: str | None = None
    regions: list[Region] = field(default_factory=list)
    size: tuple[int, int] | None = None
    box_unit: BoxUnit = "auto"


class Source:
    """An importable layout. Subclasses set ``name`` / ``help``, add their options, list their items in a
    deterministic order (:meth:`scan`) and turn items into candidates (:meth:`load`)."""

    name: ClassVar[str]
    help: ClassVar[str]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The source's own command-line options."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Source:
        raise NotImplementedError

    def identity(self) -> dict:
        """The source's paths and options as JSON values: two imports are the same import when these match."""
        raise NotImplementedError

    def scan(self, report: Report) -> list:
        """Every item of the source, in a deterministic order (cheap: no image is read)."""
        raise NotImplementedError

    def item_key(self, item) -> str:
        """A stable, unique text naming ``item`` (the split and the resume check are computed from these)."""
        return str(item)

    def load(self, items: Sequence, report: Report) -> Iterator[Candidate | None]:
        """One candidate (or None, after reporting why) per item, in order."""
        raise NotImplementedError

    def categories(self) -> list[str]:
        """The data set's category names (category-swap negatives); empty when the source has none."""
        return []

    def check_output(self, out: Path) -> None:
        """Raise :class:`DataError` when writing to ``out`` would change the source (default: never)."""


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make ``cls`` importable as ``fgclip-data import <cls.name>``."""
    if cls.name in SOURCES:
        raise ValueError(f"an import source named {cls.name!r} is already registered")
    SOURCES[cls.name] = cls
    return cls


# ------------------------------------------------------------------------------------------------ captions

_SPACES = re.compile(r"\s+")


def clean_text(text: Any) -> str:
    """A caption as one line: whitespace runs collapsed, ends stripped ('' for anything that is not text)."""
    return _SPACES.sub(" ", text).strip() if isinstance(text, str) else ""


def first_sentence(text: str) -> str:
    """Text up to the first sentence end ('. ', '! ', '? ', or Chinese '。', '！', '？'), without the final period;
    the whole text if none."""
    match = re.search(r"[.!?](\s|$)|[。！？]", text)
    head = text[: match.start() + 1] if match else text
    return head.rstrip(".。").strip() or text.strip()


def _sentence(text: str) -> str:
    if text[-1] in ".!?。！？":
        return text
    return text + ("。" if re.search(r"[\u4e00-\u9fff]", text) else ".")


def choose_captions(captions: list[str], short: str | None = None) -> tuple[str, str]:
    """(long caption, short caption) of a source record — the rule every importer follows:

    * an explicit short caption (a short-caption column / field) is the short one; the captions are the long one;
    * one caption: it is the long caption, and its first sentence the short one (the whole caption when it is
      one sentence), as Long-CLIP and the ShareGPT4V conversion do;
    * several captions (COCO's 5): the long caption is all of them in the source's order, each a sentence,
      joined (several views of the same image describe more than any one), the short caption is the first.

    Empty captions are ignored; ``("", "")`` when there is none.
    """
    texts = [t for t in (clean_text(c) for c in captions) if t]
    short = clean_text(short)
    if not texts:
        return (short, short)
    long = texts[0] if len(texts) == 1 else " ".join(_sentence(t) for t in texts)
    if short:
        return long, short
    return long, (first_sentence(texts[0]) if len(texts) == 1 else texts[0].rstrip("."))


_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "foot": "feet", "tooth": "teeth", "sheep": "sheep", "fish": "fish", "skis": "skis", "knife": "knives",
              "scissors": "scissors", "glasses": "glasses", "deer": "deer"}  # fmt: skip
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def plural(noun: str) -> str:
    """Naive English plural of a category name (last word): irregular table, -es, -ies, else -s."""
    head, _, last = noun.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR:
        last = _IRREGULAR[lower]
    elif re.search(r"(s|x|z|ch|sh)$", lower):
        last += "es"
    elif re.search(r"[^aeiou]y$", lower):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def caption_from_categories(names: Sequence[str]) -> str:
    """'two dogs, a cat and a car' from the boxes' category names (sources without captions: detection sets)."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    parts = [
        article(n) if k == 1 else f"{_NUMBERS[k] if k < len(_NUMBERS) else k} {plural(n)}" for n, k in counts.items()
    ]
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---------------------------------------------------------------------------------------------------- boxes

# normalised boxes may overshoot [0, 1] by rounding; beyond this they are outside the image
OUTSIDE_TOLERANCE = 0.02


def numbers(bbox: Any) -> list[float] | None:
    """The first four coordinates as floats, or None when ``bbox`` is not 4+ finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) < 4:
        return None
    try:
        values = [float(v) for v in bbox[:4]]
    except (TypeError, ValueError):
        return None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values) or any(isinstance(v, bool) for v in bbox[:4]):
        return None
    return values


def record_unit(regions: Sequence[Region], declared: BoxUnit) -> BoxUnit:
    """The unit of a record's boxes: the declared one, else pixels when any coordinate exceeds 1 (a normalised
    box never does, beyond rounding), else normalised."""
    if declared != "auto":
        return declared
    for region in regions:
        values = numbers(region.bbox)
        if values and max(abs(v) for v in values) > 1 + OUTSIDE_TOLERANCE:
            return "pixel"
    return "normalized"


def normalise_box(
    values: list[float], fmt: BoxFormat, unit: BoxUnit, size: tuple[int, int] | None
) -> tuple[list[float] | None, str | None]:
    """(normalised xyxy or None, problem or None). Pixel boxes need the image size; boxes reaching outside the
    image (beyond rounding) and boxes without area are refused; rounding overshoot is clipped."""
    x1, y1, a, b = values
    x2, y2 = (x1 + a, y1 + b) if fmt == "xywh" else (a, b)
    if unit == "pixel":
        if not size:
            return None, "box in pixels and no certain image size"
        w, h = size
        x1, x2, y1, y2 = x1 / w, x2 / w, y1 / h, y2 / h
    elif max(abs(v) for v in (x1, y1, x2, y2)) > 1 + OUTSIDE_TOLERANCE:
        return None, "box declared normalised has coordinates above 1 (pixels?)"
    if x2 <= x1 or y2 <= y1:
        return None, "box without area (x2 <= x1 or y2 <= y1)"
    tol = OUTSIDE_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > 1 + tol or y2 > 1 + tol:
        return None, "box outside the image"
    box = [min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2)]
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        return None, "box without area (x2 <= x1 or y2 <= y1)"
    return [round(v, 6) for v in box], None


def regions_from_json(boxes: Any, where_: str, report: Report, file: str | None = None) -> list[Region]:
    """Regions from the project's sidecar / column box list: ``[{"bbox": [...], "phrase" | "caption" |
    "short_expr": ..., "long_expr"?, "category"?, "negatives"?: [...], "format"?: "xyxy" | "xywh"}]``."""
    if boxes is None:
        return []
    if not isinstance(boxes, list):
        report.problem("boxes are not a list; boxes of this record ignored", file or where_, field="boxes")
        return []
    regions = []
    for k, item in enumerate(boxes):
        if not isinstance(item, dict):
            report.problem("box is not an object; dropped", file or where_, field=f"boxes.{k}")
            continue
        phrase = next((item[n] for n in ("phrase", "caption", "short_expr", "category", "label") if item.get(n)), "")
        negatives = item.get("negatives", item.get("short_expr_negs"))
        if isinstance(negatives, dict):
            negatives = list(negatives.values())
        regions.append(
            Region(
                bbox=item.get("bbox"),
                phrase=phrase if isinstance(phrase, str) else "",
                long_phrase=clean_text(item.get("long_expr") or item.get("long_phrase") or ""),
                category=item.get("category") if isinstance(item.get("category"), str) else None,
                negatives=negatives if isinstance(negatives, list) else None,
                fmt="xywh" if item.get("format") == "xywh" else "xyxy",
                field=f"boxes.{k}",
            )
        )
    return regions


def box_categories(boxes: Any) -> set[str]:
    """The ``category`` names of a sidecar / column box list (malformed entries ignored: :func:`regions_from_json`
    reports them when the record is loaded)."""
    if isinstance(boxes, str):
        try:
            boxes = json.loads(boxes)
        except json.JSONDecodeError:
            return set()
    if not isinstance(boxes, list):
        return set()
    return {b["category"].strip() for b in boxes if isinstance(b, dict) and isinstance(b.get("category"), str)} - {""}


def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a file, else a :class:`DataError` naming it."""
    if not path.is_file():
        raise DataError(f"{what} not found", str(path))
    return path
