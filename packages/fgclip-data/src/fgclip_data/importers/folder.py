"""An image folder with sidecar captions: ``x.jpg`` + ``x.txt`` (the caption), optionally ``x.json`` (boxes).

The sidecar JSON may hold ``boxes`` (a list of ``{"bbox": [x1, y1, x2, y2], "phrase": "...", "category"?,
"long_expr"?, "negatives"?: [...], "format"?: "xywh"}``, normalised or in pixels of the image), ``box_unit``
(``"pixel"`` / ``"normalized"``; default: decided from the values), and ``caption`` / ``captions`` /
``short_caption`` when there is no ``.txt``. Sub-folders are walked; the image's path without its suffix is its
key (``images/<key>.jpg`` in the output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from fgclip_data.importers.base import Candidate, Source, box_categories, regions_from_json, register_source
from fgclip_data.report import DataError, Report

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_sidecar_json(path: Path, report: Report, where: str) -> dict | None:
    """The sidecar object, or None (reported) when it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        report.problem("sidecar JSON is not valid JSON; its boxes ignored", str(path))
        return None
    if not isinstance(data, dict):
        report.problem("sidecar JSON is not an object; its boxes ignored", str(path))
        return None
    return data


def sidecar_candidate(
    key: str,
    image: Path | bytes,
    suffix: str,
    text: str | None,
    meta: dict | None,
    where: str,
    report: Report,
    file: str | None = None,
) -> Candidate:
    """The candidate of an image with an optional caption text and an optional JSON object (boxes, captions)."""
    meta = meta or {}
    captions = [text] if text is not None else []
    if not captions:
        extra = meta.get("captions") if isinstance(meta.get("captions"), list) else [meta.get("caption")]
        captions = [c for c in extra if isinstance(c, str)]
    short = meta.get("short_caption") if isinstance(meta.get("short_caption"), str) else None
    unit = meta.get("box_unit", "auto")
    if unit not in ("auto", "pixel", "normalized"):
        report.problem(f"unknown box_unit {unit!r}; decided from the values", file or where, field="box_unit")
        unit = "auto"
    return Candidate(
        key=key,
        where=where,
        image=image,
        suffix=suffix,
        captions=captions,
        short_caption=short,
        regions=regions_from_json(meta.get("boxes"), where, report, file),
        box_unit=unit,
    )


@register_source
class FolderSource(Source):
    """``fgclip-data import folder DIR``: images with ``.txt`` captions and optional ``.json`` boxes."""

    name = "folder"
    help = "an image folder with sidecar captions (x.jpg + x.txt, optional x.json with boxes)"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", type=Path, help="the image folder (walked recursively)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FolderSource:
        return cls(args.root)

    def identity(self) -> dict:
        return {"root": str(self.root.resolve())}

    def check_output(self, out: Path) -> None:
        if out.resolve().is_relative_to(self.root.resolve()):
            raise DataError(
                "is inside the source folder (its images would be imported next time); choose another --out", str(out)
            )

    def scan(self, report: Report) -> list[str]:
        if not self.root.is_dir():
            raise DataError("is not a folder", str(self.root))
        files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not files:
            raise DataError(f"holds no images ({', '.join(IMAGE_SUFFIXES)})", str(self.root))
        self._categories: set[str] = set()
        for meta in self.root.rglob("*.json"):  # category names of the boxes: category-swap negatives
            # a malformed sidecar is reported when its image is loaded
            with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                self._categories |= box_categories(json.loads(meta.read_text(encoding="utf-8")).get("boxes"))
        stems = {f.rsplit(".", 1)[0] for f in files}
        for caption in sorted(self.root.rglob("*.txt")):
            if caption.relative_to(self.root).with_suffix("").as_posix() not in stems:
                report.problem("caption file without an image (missing image)", str(caption))
        return files

    def item_key(self, item: str) -> str:
        return item.rsplit(".", 1)[0]

    def categories(self) -> list[str]:
        return sorted(getattr(self, "_categories", ()))

    def load(self, items: Sequence[str], report: Report) -> Iterator[Candidate | None]:
        for item in items:
            image = self.root / item
            key = self.item_key(item)
            txt, meta_file = image.with_suffix(".txt"), image.with_suffix(".json")
            text = None
            if txt.is_file():
                try:
                    text = txt.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    report.problem("caption file is not UTF-8 text", str(txt))
                    yield None
                    continue
            meta = read_sidecar_json(meta_file, report, str(image)) if meta_file.is_file() else None
            if text is None and not (meta and (meta.get("caption") or meta.get("captions") or meta.get("boxes"))):
                report.problem("image without a caption file (.txt) or caption / boxes in a .json", str(image))
                yield None
                continue
            yield sidecar_candidate(key, image, image.suffix.lower(), text, meta, str(image), report, str(meta_file))
