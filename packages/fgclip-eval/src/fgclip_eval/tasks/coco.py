"""Where COCO's images are: the 2017 splits as COCO's own downloads lay them out (``coco/images/<split>/`` or
``coco/<split>/``), shared by the caption, detection, LVIS and FG-OVD tasks."""

from __future__ import annotations

from pathlib import Path

from . import first_existing

COCO_LAYOUT = "coco/images/val2017/*.jpg (or coco/val2017/) and coco/annotations/captions_val2017.json"


def coco_images_folder(data_root: Path, split: str, task: str, layout: str) -> Path:
    root = data_root / "coco"
    return first_existing([root / "images" / split, root / split], task, layout)


def coco_path(data_root: Path, relative: str) -> Path:
    split, _, name = relative.partition("/")
    for candidate in (data_root / "coco" / "images" / split / name, data_root / "coco" / relative):
        if candidate.exists():
            return candidate
    return data_root / "coco" / relative  # missing: the loader names it
