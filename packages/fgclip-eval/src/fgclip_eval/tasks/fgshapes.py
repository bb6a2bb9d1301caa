"""FG-Shapes tasks: image↔text retrieval (short and long captions), hard negatives and box classification on
the validation split of an FG-Shapes folder (``fgclip-data fgshapes generate``), with FG-Shapes' own metric
definitions (``fgclip_data.fgshapes.tasks``), the ones training-time validation reports."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from fgclip_data import read_records, resolve_image_path
from fgclip_data.fgshapes import FGShapesFolder
from fgclip_data.fgshapes.tasks import (
    box_class,
    box_classification_accuracy,
    class_prompts,
    classes,
    hard_negative_accuracy,
)
from fgclip_data.finehard.samples import load_image
from fgclip_data.report import Report

from ..metrics import image_to_text_recall, text_to_image_recall, topk_accuracy
from ..zeroshot import candidate_texts
from . import NotApplicable, require, task

LAYOUT = (
    "an FG-Shapes folder (manifest.json, jsonfiles/val/*.json, grit-12m/...): fgclip-data fgshapes generate --out DIR"
)


def locate(data_root: Path) -> FGShapesFolder:
    found = FGShapesFolder.locate(data_root)
    if found is None:
        require(data_root / "fgshapes" / "manifest.json", "fgshapes", LAYOUT)  # raises, naming the places
    return found


@lru_cache(maxsize=4)
def _validation(folder: FGShapesFolder):
    report = Report()
    records = read_records(folder.val, report)
    images, kept = [], []
    for ref in records:
        image = load_image(resolve_image_path(ref.record.f_path, folder.images), report, ref.file)
        if image is not None:
            images.append(image)
            kept.append(ref.record)
    if not kept:
        raise NotApplicable(f"{folder.root}: no readable validation image")
    return images, kept


@task("fgshapes-retrieval", "FG-Shapes image↔text R@1/5, short and long captions", LAYOUT, groups=("fgshapes",))
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


@task("fgshapes-hard-negatives", "FG-Shapes: true region caption among its 10 rewrites", LAYOUT, groups=("fgshapes",))
def hard_negatives(encoder, data_root: Path) -> dict[str, float]:
    regions, boxes = _regions(encoder, data_root)
    texts, mask = candidate_texts(encoder, [[b.short_expr, *b.negatives] for b in boxes])
    return {"accuracy": hard_negative_accuracy(torch.einsum("nd,nkd->nk", regions, texts), mask)}


@task("fgshapes-box-classification", "FG-Shapes: box -> one of 40 colour-shape classes", LAYOUT, groups=("fgshapes",))
def box_classification(encoder, data_root: Path) -> dict[str, float]:
    names = classes(locate(data_root).vocabulary)
    regions, boxes = _regions(encoder, data_root)
    labels = torch.tensor([box_class(b.short_expr, names) for b in boxes])
    scores = regions @ encoder.texts(class_prompts(names), "box").T
    return {"top1": box_classification_accuracy(scores, labels), "top5": topk_accuracy(scores, labels, ks=(5,))[5]}
