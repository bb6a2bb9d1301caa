"""Samples of every import source in its real layout, written by the tests, and readers of an import's output."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from fgclip_data import FineHARDDataset, SampleOptions, Skipped, read_records
from fgclip_data.cli import main

CATEGORIES = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "sofa"}, {"id": 4, "name": "couch"},
              {"id": 5, "name": "car"}, {"id": 6, "name": "apple"}]  # fmt: skip


def image(path: Path, size=(40, 30), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def jpeg_bytes(size=(40, 30), seed=0) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def records(out: Path) -> dict[str, list]:
    """Records of both splits, read by the project's FineHARD reader."""
    return {
        split: [r.record for r in read_records(out / "jsonfiles" / split)]
        if any((out / "jsonfiles" / split).glob("*.jsonl"))
        else []
        for split in ("train", "val")
    }


def by_path(out: Path) -> dict:
    found = records(out)
    return {r.f_path: r for split in found.values() for r in split}


def samples(out: Path, split: str = "train") -> list:
    """Training samples of a split through the project's dataset (every negative count accepted)."""
    dataset = FineHARDDataset(out / "jsonfiles" / split, out / "images", SampleOptions(negatives=None))
    built = [dataset[i] for i in range(len(dataset))]
    assert not any(isinstance(s, Skipped) for s in built), dataset.report.summary()
    return built


def cli(*argv) -> int:
    return main(["import", *map(str, argv)])


def coco_sample(root: Path, n: int = 4) -> dict:
    images = [{"id": 10 + i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in range(n)]
    for i, im in enumerate(images):
        image(root / "train2017" / im["file_name"], size=(64, 48), seed=i)
    captions = [
        {"id": 100 + 5 * i + k, "image_id": im["id"], "caption": f"Caption {k} of image {i}."}
        for i, im in enumerate(images)
        for k in range(5)
    ]
    boxes = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [6.4, 4.8, 32, 24], "iscrowd": 0, "area": 1},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [32, 24, 32, 24], "iscrowd": 0, "area": 1},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 0, "area": 1},
        {"id": 4, "image_id": 11, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1, "area": 1},
    ]
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": captions}))
    (ann / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": boxes, "categories": CATEGORIES})
    )
    return {
        "images": root / "train2017",
        "captions": ann / "captions_train2017.json",
        "instances": ann / "instances_train2017.json",
    }


def write_img2dataset_shard(path: Path, start: int, n: int, failed: int | None = None) -> None:
    """A shard as img2dataset writes it: <key>.jpg, <key>.txt, <key>.json (a failed sample: only its json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            key = f"{i:09d}"
            meta = {
                "url": f"http://x/{i}.jpg",
                "key": key,
                "status": "success",
                "caption": f"sample {i}",
                "width": 40,
                "height": 30,
            }
            members = {"json": json.dumps(meta).encode()}
            if i != failed:
                members = {"jpg": jpeg_bytes(seed=i), "txt": f"Sample {i}. A photo.".encode(), **members}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
