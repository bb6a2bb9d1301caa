"""COCO: captions (``captions_*.json``) and / or instances (``instances_*.json``) of one split.

Every image of either file is one record. Its captions (COCO: 5) follow the caption rule (the long caption is all
of them, the short one the first); its instance boxes (pixel ``[x, y, w, h]``) are normalised with the image size
the JSON declares (checked against the image: when they differ, pixel boxes are refused), and each becomes a region
whose caption is its category name (``long_expr``: the name and where the box is, e.g. "a dog in the top left of
the image"). Crowd annotations (``iscrowd: 1``: a group, not one object) are skipped and counted. An image with
boxes but no caption gets a caption made from its categories ("two dogs and a cat").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from fgclip_data.importers.base import Candidate, Region, Source, article, register_source
from fgclip_data.report import DataError, Report

_ROWS = ("top", "middle", "bottom")
_COLUMNS = ("left", "center", "right")


def where_in_image(cx: float, cy: float) -> str:
    """'in the top left', 'in the center' ... of a normalised box centre (3 x 3 grid)."""
    row, column = _ROWS[min(int(cy * 3), 2)], _COLUMNS[min(int(cx * 3), 2)]
    if row == "middle" and column == "center":
        return "in the center"
    if row == "middle":
        return f"on the {column}"
    return f"at the {row}" if column == "center" else f"in the {row} {column}"


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object file, or a :class:`DataError` naming it (missing, not JSON, not an object)."""
    if not path.is_file():
        raise DataError(f"{what} not found", str(path))
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"is not a JSON file ({what} expected)", str(path)) from err
    if not isinstance(data, dict):
        raise DataError(f"is not a JSON object ({what} expected)", str(path))
    return data


def _coco_list(data: dict, key: str, path: Path, what: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"is not a COCO {what} file (no {key!r} list)", str(path), field=key)
    return value


@register_source
class COCOSource(Source):
    """``fgclip-data import coco --captions captions_train2017.json --instances instances_train2017.json
    --images train2017/``."""

    name = "coco"
    help = "COCO captions and/or instances JSON (boxes become region captions from category names)"

    def __init__(self, images: Path, captions: Path | None = None, instances: Path | None = None) -> None:
        if captions is None and instances is None:
            raise DataError("give --captions and/or --instances")
        self.images, self.captions_file, self.instances_file = Path(images), captions, instances
        self._categories: dict[int, str] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--images", required=True, type=Path, help="the split's image folder (e.g. train2017/)")
        parser.add_argument("--captions", type=Path, default=None, help="captions_<split>.json")
        parser.add_argument("--instances", type=Path, default=None, help="instances_<split>.json")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> COCOSource:
        return cls(args.images, args.captions, args.instances)

    def identity(self) -> dict:
        def resolved(p):
            return str(Path(p).resolve()) if p else None

        return {
            "images": resolved(self.images),
            "captions": resolved(self.captions_file),
            "instances": resolved(self.instances_file),
        }

    def scan(self, report: Report) -> list[int]:
        self._images: dict[int, dict] = {}
        self._captions: dict[int, list[str]] = {}
        self._boxes: dict[int, list[tuple[int, dict]]] = {}
        for path, what in ((self.captions_file, "captions"), (self.instances_file, "instances")):
            if path is None:
                continue
            path = Path(path)
            data = read_json_file(path, f"COCO {what} file")
            for image in _coco_list(data, "images", path, what):
                if (
                    isinstance(image, dict)
                    and isinstance(image.get("id"), int)
                    and isinstance(image.get("file_name"), str)
                ):
                    self._images.setdefault(image["id"], image)
                else:
                    report.problem("image entry without an id or file_name skipped", str(path), field="images")
            annotations = _coco_list(data, "annotations", path, what)
            if what == "captions":
                self._read_captions(annotations, path, report)
            else:
                for category in _coco_list(data, "categories", path, what):
                    if isinstance(category, dict) and isinstance(category.get("id"), int):
                        name = category.get("name")
                        self._categories[category["id"]] = name.strip() if isinstance(name, str) else ""
                self._read_boxes(annotations, path, report)
        if not self._images:
            raise DataError("lists no images", str(self.captions_file or self.instances_file))
        return sorted(self._images)

    def _read_captions(self, annotations: list, path: Path, report: Report) -> None:
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "caption" not in ann:
                raise DataError("is not a COCO captions file (an annotation has no 'caption')", str(path), k, "caption")
            if ann.get("image_id") not in self._images:
                report.problem("caption of an image the file does not list; skipped", str(path), k, "image_id")
                continue
            self._captions.setdefault(ann["image_id"], []).append(ann["caption"])

    def _read_boxes(self, annotations: list, path: Path, report: Report) -> None:
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "bbox" not in ann:
                raise DataError("is not a COCO instances file (an annotation has no 'bbox')", str(path), k, "bbox")
            if ann.get("image_id") not in self._images:
                report.problem("box of an image the file does not list; skipped", str(path), k, "image_id")
            elif ann.get("category_id") not in self._categories:
                report.problem("box of an unknown category; skipped", str(path), k, "category_id")
            elif ann.get("iscrowd"):
                report.problem("crowd annotation (a group, not one object) skipped", str(path), k, "iscrowd")
            else:
                self._boxes.setdefault(ann["image_id"], []).append((k, ann))

    def item_key(self, item: int) -> str:
        return self._images[item]["file_name"].rsplit(".", 1)[0]

    def categories(self) -> list[str]:
        return sorted({n for n in self._categories.values() if n})

    def load(self, items: Sequence[int], report: Report) -> Iterator[Candidate | None]:
        for image_id in items:
            image = self._images[image_id]
            size = (image.get("width"), image.get("height"))
            certain = all(isinstance(v, (int, float)) and v > 0 for v in size)
            regions = []
            for k, ann in self._boxes.get(image_id, []):
                name = self._categories[ann["category_id"]]
                long = ""
                box = ann["bbox"]
                if (
                    certain
                    and isinstance(box, list)
                    and len(box) == 4
                    and all(isinstance(v, (int, float)) for v in box)
                ):
                    cx, cy = (box[0] + box[2] / 2) / size[0], (box[1] + box[3] / 2) / size[1]
                    long = f"{article(name)} {where_in_image(cx, cy)} of the image" if name else ""
                regions.append(
                    Region(
                        bbox=box,
                        phrase=name,
                        long_phrase=long,
                        category=name or None,
                        fmt="xywh",
                        field=f"annotations.{k}.bbox",
                    )
                )
            file = self.images / image["file_name"]
            yield Candidate(
                key=self.item_key(image_id),
                where=f"{self.images / image['file_name']} (image id {image_id})",
                image=file,
                suffix=file.suffix.lower() or ".jpg",
                captions=self._captions.get(image_id, []),
                regions=regions,
                size=(int(size[0]), int(size[1])) if certain else None,
                box_unit="pixel",
            )
