"""Fixtures: FineHARD-format record files and images written in the real layouts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# the tests import the sample builders of _import_samples.py (pytest runs with --import-mode=importlib)
sys.path.insert(0, str(Path(__file__).parent))


def negs(prefix: str, n: int = 10) -> dict[str, str]:
    return {f"n{i}": f"{prefix} {i}" for i in range(n)}


def record(key: str, boxes=None, **overrides) -> dict:
    data = {
        "f_path": f"grit-20m/data-12m/coyo_image_0/00000/{key}.jpg",
        "caption": f"A Long caption of {key}.",
        "short_caption": f"short {key}",
        "bbox_info": boxes
        if boxes is not None
        else [
            {
                "bbox": [0.1, 0.1, 0.5, 0.5, 0.9],
                "short_expr": "a Red ball",
                "long_expr": "a red ball on grass",
                "flag_short_neg": 1,
                "short_expr_negs": negs("a blue ball"),
            },
            {"bbox": [0.5, 0.2, 0.9, 0.8], "short_expr": "a dog", "long_expr": "a brown dog", "flag_short_neg": 0},
        ],
    }
    data.update(overrides)
    return data


def write_image(path: Path, size=(48, 32), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def finehard(tmp_path) -> dict:
    """jsonfiles/ with one JSON-array file and one JSON-lines file, and grit-12m/ images for every record."""
    root = tmp_path / "FineHARD"
    images = tmp_path / "grit-12m"
    jsonfiles = root / "jsonfiles"
    jsonfiles.mkdir(parents=True)
    array = [record(f"k{i}") for i in range(5)]
    lines = [record(f"k{i}") for i in range(5, 8)]
    (jsonfiles / "part_000.json").write_text(json.dumps(array))
    (jsonfiles / "part_001.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    for i in range(8):
        write_image(images / "coyo_image_0" / "00000" / f"k{i}.jpg", seed=i)
    return {"jsonfiles": jsonfiles, "images": images, "records": array + lines}


@pytest.fixture
def make():
    """Factories for records and images: ``make.record(key, boxes, **fields)``, ``make.negs(prefix, n)``,
    ``make.image(path, size, seed)``."""
    from types import SimpleNamespace

    return SimpleNamespace(record=record, negs=negs, image=write_image)
