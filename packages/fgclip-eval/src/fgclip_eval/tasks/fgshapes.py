"""FG-Shapes tasks: image↔text retrieval (short and long captions), hard negatives and box classification on
the validation split of an FG-Shapes folder (``fgclip-data fgshapes generate``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from fgclip_data import read_records, resolve_image_path
from fgclip_data.finehard.samples import load_image
from fgclip_data.report import Report

from ..metrics import image_to_text_recall, text_to_image_recall, topk_accuracy
from . import NotApplicable, Task, register, require
from .boxes import candidate_accuracy

LAYOUT = (
    "an FG-Shapes folder (manifest.json, jsonfiles/val/*.json, grit-12m/...): fgclip-data fgshapes generate --out DIR"
)


def locate(data_root: Path) -> Path:
    for candidate in (data_root, data_root / "fgshapes"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return require(data_root / "fgshapes" / "manifest.json", "fgshapes", LAYOUT).parent


@lru_cache(maxsize=4)
def _validation(folder: Path):
    report = Report()
    records = read_records(folder / "jsonfiles" / "val", report)
    images, kept = [], []
    for ref in records:
        image = load_image(resolve_image_path(ref.record.f_path, folder / "grit-12m"), report, ref.file)
        if image is not None:
            images.append(image)
            kept.append(ref.record)
    if not kept:
        raise NotApplicable(f"{folder}: no readable validation image")
    return images, kept


def retrieval(encoder, data_root: Path) -> dict[str, float]:
    images, records = _validation(locate(data_root))
    image = encoder.images(images)
    pairs = torch.arange(len(records))
    out = {}
    for name, texts, walk in (
        ("short", [r.short_caption for r in records], "short"),
        ("long", [r.caption for r in records], "long"),
    ):
        sim = image @ encoder.texts(texts, walk).T
        for k, v in image_to_text_recall(sim, pairs, ks=(1, 5)).items():
            out[f"{name}_i2t_r{k}"] = v
        for k, v in text_to_image_recall(sim, pairs, ks=(1, 5)).items():
            out[f"{name}_t2i_r{k}"] = v
    return out


def _regions(encoder, data_root: Path):
    if not encoder.has_regions:
        raise NotApplicable(f"the {encoder.family} family has no region features")
    images, records = _validation(locate(data_root))
    boxes = [torch.tensor([b.xyxy for b in r.bbox_info]).reshape(-1, 4) for r in records]
    return torch.cat(encoder.regions(images, boxes)), [b for r in records for b in r.bbox_info]


def hard_negatives(encoder, data_root: Path) -> dict[str, float]:
    regions, boxes = _regions(encoder, data_root)
    return {"accuracy": candidate_accuracy(encoder, regions, [[b.short_expr, *b.negatives] for b in boxes])}


def box_classification(encoder, data_root: Path) -> dict[str, float]:
    import json

    folder = locate(data_root)
    vocabulary = json.loads((folder / "manifest.json").read_text())["vocabulary"]
    classes = [f"{c} {s}" for c in vocabulary["colors"] for s in vocabulary["shapes"]]
    regions, boxes = _regions(encoder, data_root)
    labels = torch.tensor([classes.index(" ".join(b.short_expr.split()[2:4])) for b in boxes])
    prompts = encoder.texts([f"a {c}" for c in classes], "box")
    top = topk_accuracy(regions @ prompts.T, labels, ks=(1, 5))
    return {"top1": top[1], "top5": top[5]}


register(
    Task("fgshapes-retrieval", "FG-Shapes image↔text R@1/5, short and long captions", LAYOUT, retrieval, ("fgshapes",))
)
register(
    Task(
        "fgshapes-hard-negatives",
        "FG-Shapes: true region caption among its 10 rewrites",
        LAYOUT,
        hard_negatives,
        ("fgshapes",),
    )
)
register(
    Task(
        "fgshapes-box-classification",
        "FG-Shapes: box -> one of 40 colour-shape classes",
        LAYOUT,
        box_classification,
        ("fgshapes",),
    )
)
