"""tools/finetune/make_coco_like.py writes a COCO-layout set that fgclip-eval's ``coco`` / ``coco-box`` readers and
``fgclip-data import coco`` read as they read COCO itself."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from fgclip_data import read_records
from fgclip_data.importers import SOURCES, ImportOptions, run_import
from fgclip_eval.tasks.boxes import detection_set
from fgclip_eval.tasks.coco import coco_images_folder
from fgclip_eval.tasks.retrieval import read_coco

TOOL = Path(__file__).parents[1] / "tools" / "finetune" / "make_coco_like.py"


def _tool():
    spec = importlib.util.spec_from_file_location("make_coco_like", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_layout_read_by_the_benchmark_and_the_importer(tmp_path):
    tool = _tool()
    counts = tool.main(["--out", str(tmp_path / "d"), "--train", "6", "--val", "4", "--seed", "3"])
    assert counts["train"]["images"] == 6 and counts["val"]["captions"] == 20
    pairs = read_coco(tmp_path / "d")  # the `coco` task: val2017 images, 5 captions each
    assert len(pairs.images) == 4 and len(pairs.texts) == 20 and all(p.is_file() for p in pairs.images)
    root = tmp_path / "d" / "coco"
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    folder = coco_images_folder(tmp_path / "d", "val2017", "coco-box", "")
    images, boxes, _labels, names = detection_set(data, lambda im: folder / im["file_name"])  # the `coco-box` task
    assert names == list(tool.CATEGORIES) and sum(len(b) for b in boxes) == counts["val"]["boxes"]
    assert all(p.is_file() for p in images)
    # same seed -> same files; the import reads the train split
    again = tool.main(["--out", str(tmp_path / "e"), "--train", "6", "--val", "4", "--seed", "3"])
    assert again == counts
    assert (root / "images" / "train2017" / "000000000002.jpg").read_bytes() == (
        tmp_path / "e" / "coco" / "images" / "train2017" / "000000000002.jpg"
    ).read_bytes()
    source = SOURCES["coco"](
        root / "images" / "train2017",
        root / "annotations" / "captions_train2017.json",
        root / "annotations" / "instances_train2017.json",
    )
    manifest = run_import(source, tmp_path / "imported", ImportOptions(val_size=2))
    assert manifest["counts"] == {"train": 4, "val": 2} and manifest["skipped"] == 0
    recs = [r.record for r in read_records(tmp_path / "imported" / "jsonfiles" / "train")]
    assert sum(len(r.bbox_info) for r in recs) > 0
    assert all(len(b.negatives) == 10 for r in recs for b in r.bbox_info)  # 14 categories: 10 swaps always exist


@pytest.mark.slow  # ~20 s on 2 CPU cores (80 prompt templates x 14 classes)
def test_benchmark_coco_tasks_run_on_it(tmp_path, golden, gemma_like_tokenizer):
    from fgclip_eval.cli import main as benchmark

    _tool().main(["--out", str(tmp_path / "d"), "--train", "1", "--val", "6"])
    model = tmp_path / "model"
    shutil.copytree(golden / "v2_s1_fixed" / "model", model)
    gemma_like_tokenizer.save_pretrained(model)
    out = tmp_path / "bench"
    args = ["--model", str(model), "--tasks", "coco,coco-box", "--data-root", str(tmp_path / "d"), "--output", str(out)]
    assert benchmark([*args, "--quiet", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results["coco"]) >= {"i2t_r1", "t2i_r1"} and results["coco-box"]["n_boxes"] > 0
