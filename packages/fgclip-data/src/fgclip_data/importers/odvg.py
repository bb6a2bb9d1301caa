"""Grounding and detection JSON Lines in the ODVG layout (GroundingDINO / mmdetection's grounding data).

One JSON object a line: ``filename``, ``width``, ``height`` and either ``grounding`` — ``caption`` and
``regions[]`` of ``{"bbox": [x1, y1, x2, y2] (or a list of such), "phrase": ...}``: phrase-grounded boxes — or
``detection`` — ``instances[]`` of ``{"bbox", "label", "category"}`` (with a ``--label-map`` JSON of label →
name when instances carry only labels). Boxes are corner boxes in pixels of the declared size (normalised boxes
are recognised by their values); lines of the same image are merged into one record. A detection record has no
caption: one is made from its categories; category-swap negatives use the detection categories of the file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from fgclip_data.importers.base import Candidate, Region, Source, register_source
from fgclip_data.report import DataError, Report


def _read_label_map(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError("is not a JSON label map ({label: name})", str(path)) from err
    if not isinstance(data, dict):
        raise DataError("is not a JSON label map ({label: name})", str(path))
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


@register_source
class ODVGSource(Source):
    """``fgclip-data import odvg FILE.jsonl --images DIR [--label-map label_map.json]``."""

    name = "odvg"
    help = "grounding / detection JSON Lines in the ODVG layout (GroundingDINO, mmdetection)"

    def __init__(self, file: Path, images: Path, label_map: Path | None = None) -> None:
        self.file, self.images, self.label_map_file = Path(file), Path(images), label_map
        self.label_map = _read_label_map(Path(label_map)) if label_map else {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", type=Path, help="the ODVG .jsonl file")
        parser.add_argument("--images", required=True, type=Path, help="folder the filenames are relative to")
        parser.add_argument("--label-map", type=Path, default=None, help="detection: JSON {label: category name}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ODVGSource:
        return cls(args.file, args.images, args.label_map)

    def identity(self) -> dict:
        return {
            "file": str(self.file.resolve()),
            "images": str(self.images.resolve()),
            "label_map": str(Path(self.label_map_file).resolve()) if self.label_map_file else None,
        }

    def scan(self, report: Report) -> list[str]:
        if not self.file.is_file():
            raise DataError("ODVG file not found", str(self.file))
        self._lines: dict[str, list[tuple[int, dict]]] = {}
        self._names: set[str] = set(self.label_map.values())
        seen = 0
        with open(self.file, "rb") as f:
            for index, raw in enumerate(f):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    value = None
                ok = (
                    isinstance(value, dict)
                    and isinstance(value.get("filename"), str)
                    and (isinstance(value.get("grounding"), dict) or isinstance(value.get("detection"), dict))
                )
                if not ok:
                    if not seen:
                        raise DataError(
                            "is not ODVG JSON Lines (a line is not an object with filename and grounding/detection)",
                            str(self.file),
                            index,
                        )
                    report.problem("line is not an ODVG record; skipped", str(self.file), index)
                    continue
                seen += 1
                self._lines.setdefault(value["filename"], []).append((index, value))
                for inst in (value.get("detection") or {}).get("instances") or []:
                    if isinstance(inst, dict) and isinstance(inst.get("category"), str) and inst["category"].strip():
                        self._names.add(inst["category"].strip())
        if not self._lines:
            raise DataError("holds no records", str(self.file))
        return sorted(self._lines)

    def item_key(self, item: str) -> str:
        return item.rsplit(".", 1)[0]

    def categories(self) -> list[str]:
        return sorted(self._names)

    def _regions(self, index: int, value: dict, report: Report) -> tuple[list[str], list[Region]]:
        captions, regions = [], []
        grounding, detection = value.get("grounding"), value.get("detection")
        if isinstance(grounding, dict):
            if isinstance(grounding.get("caption"), str):
                captions.append(grounding["caption"])
            for k, region in enumerate(grounding.get("regions") or []):
                if not isinstance(region, dict):
                    report.problem("region is not an object; dropped", str(self.file), index, f"grounding.regions.{k}")
                    continue
                boxes = region.get("bbox")
                nested = isinstance(boxes, list) and boxes and all(isinstance(b, list) for b in boxes)
                for j, box in enumerate(boxes if nested else [boxes]):
                    field = f"grounding.regions.{k}.bbox" + (f".{j}" if nested else "")
                    phrase = region.get("phrase") if isinstance(region.get("phrase"), str) else ""
                    negatives = region.get("negatives") if isinstance(region.get("negatives"), list) else None
                    regions.append(Region(bbox=box, phrase=phrase, negatives=negatives, field=field))
        if isinstance(detection, dict):
            for k, inst in enumerate(detection.get("instances") or []):
                if not isinstance(inst, dict):
                    report.problem(
                        "instance is not an object; dropped", str(self.file), index, f"detection.instances.{k}"
                    )
                    continue
                name = inst.get("category")
                if not isinstance(name, str):
                    name = self.label_map.get(str(inst.get("label")), "")
                regions.append(
                    Region(
                        bbox=inst.get("bbox"),
                        phrase=name,
                        category=name.strip() or None,
                        field=f"detection.instances.{k}.bbox",
                    )
                )
        return captions, regions

    def load(self, items: Sequence[str], report: Report) -> Iterator[Candidate | None]:
        for filename in items:
            lines = self._lines[filename]
            index, first = lines[0]
            captions, regions = [], []
            for i, value in lines:
                c, r = self._regions(i, value, report)
                captions += c
                regions += r
            size = (first.get("width"), first.get("height"))
            certain = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in size)
            file = self.images / filename
            yield Candidate(
                key=self.item_key(filename),
                where=f"{self.file}, record {index}",
                image=file,
                suffix=file.suffix.lower() or ".jpg",
                captions=captions,
                regions=regions,
                size=(int(size[0]), int(size[1])) if certain else None,
            )
