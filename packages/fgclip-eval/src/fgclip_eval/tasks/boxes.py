"""Region tasks: box classification (COCO, LVIS, BoxClass-CN) and FG-OVD (hard / medium / easy / trivial).

Each image is encoded once and all its boxes are pooled from that one feature map (the reference re-encodes
the whole image for every annotation). Boxes are COCO ``[x, y, w, h]`` in pixels of the original image.
Differences from the reference scripts: LVIS images are looked up in the COCO split their URL names (LVIS val
draws on train2017 too; the reference skipped those silently), and a missing image is an error, never a
silently smaller denominator.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from ..metrics import first_is_best, topk_accuracy
from ..protocols import box_probabilities
from ..zeroshot import candidate_texts, templates, zero_shot_classifier
from . import MissingDataset, NotApplicable, Task, register, require, task
from .coco import coco_images_folder, coco_path


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def _require_regions(encoder) -> None:
    if not encoder.has_regions:
        raise NotApplicable(f"the {encoder.family} family has no region features")


def reference_regions(encoder, images: list[Path], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
    """RoI features of xyxy pixel boxes as the family's reference box scripts score them (FG-CLIP v1:
    un-normalised; FG-CLIP 2: normalised)."""
    return encoder.regions(images, boxes, pixels=True, normalize=not encoder.protocol.raw_regions)


def classify_boxes(
    encoder, images: list[Path], boxes: list[torch.Tensor], labels: list[torch.Tensor], classnames, prompts
) -> dict[str, float]:
    """Top-1/5 of every box (xywh pixels) against the class embeddings, each image encoded once, ranked as the
    reference scripts rank: ``topk`` of ``softmax(100 · roi · W)`` in float32 (whose underflow to 0 decides the
    top-5 among tied classes when the RoI features are FG-CLIP v1's un-normalised ones)."""
    _require_regions(encoder)
    weights = zero_shot_classifier(encoder, classnames, prompts, walk="box")
    regions = reference_regions(encoder, images, [xywh_to_xyxy(b) for b in boxes])
    probabilities = box_probabilities(torch.cat(regions), weights)
    top = topk_accuracy(probabilities, torch.cat(labels), ks=(1, 5), rule="topk")
    return {"top1": top[1], "top5": top[5], "n_boxes": sum(len(b) for b in boxes)}


def detection_set(data: dict, file_of) -> tuple[list[Path], list[torch.Tensor], list[torch.Tensor], list[str]]:
    """A COCO-style detection file (``images``, ``annotations``, ``categories``) as (image per annotated image in id
    order, its xywh boxes, their class indices, class names in category-id order); ``file_of(image) -> Path``."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    boxes, labels = defaultdict(list), defaultdict(list)
    for ann in data["annotations"]:
        boxes[ann["image_id"]].append(ann["bbox"])
        labels[ann["image_id"]].append(index[ann["category_id"]])
    files = {image["id"]: file_of(image) for image in data["images"]}
    ids = sorted(boxes)
    return (
        [files[i] for i in ids],
        [torch.tensor(boxes[i], dtype=torch.float32).reshape(-1, 4) for i in ids],
        [torch.tensor(labels[i], dtype=torch.long) for i in ids],
        [c["name"] for c in categories],
    )


# ------------------------------------------------------------------------------------------------------ COCO

COCO_BOX_LAYOUT = "coco/images/val2017/*.jpg (or coco/val2017/) and coco/annotations/instances_val2017.json"


@task("coco-box", "COCO val2017 box classification, 80 classes, top-1/5", COCO_BOX_LAYOUT, groups=("boxes",))
def coco_boxes(encoder, data_root: Path) -> dict[str, float]:
    """Every annotation of val2017 (crowd and tiny boxes included, as the reference) over the 80 classes."""
    _require_regions(encoder)
    path = require(data_root / "coco" / "annotations" / "instances_val2017.json", "coco-box", COCO_BOX_LAYOUT)
    folder = coco_images_folder(data_root, "val2017", "coco-box", COCO_BOX_LAYOUT)
    images, boxes, labels, names = detection_set(json.loads(path.read_text()), lambda im: folder / im["file_name"])
    return classify_boxes(encoder, images, boxes, labels, names, templates())


LVIS_LAYOUT = (
    "lvis/lvis_v1_val.json with the COCO 2017 images under coco/images/{train2017,val2017}/ (or coco/<split>/)"
)


@task("lvis-box", "LVIS v1 val box classification, 1203 classes, top-1/5", LVIS_LAYOUT, groups=("boxes",))
def lvis_boxes(encoder, data_root: Path) -> dict[str, float]:
    """LVIS v1 val over its 1203 classes (ordered by id, ``_`` read as a space)."""
    _require_regions(encoder)
    path = require(data_root / "lvis" / "lvis_v1_val.json", "lvis-box", LVIS_LAYOUT)

    def file_of(image: dict) -> Path:
        split, name = image["coco_url"].rstrip("/").split("/")[-2:]
        return coco_images_folder(data_root, split, "lvis-box", LVIS_LAYOUT) / name

    images, boxes, labels, names = detection_set(json.loads(path.read_text()), file_of)
    names = [n.replace("_", " ") for n in names]
    return classify_boxes(encoder, images, boxes, labels, names, templates())


BOXCLASS_LAYOUT = (
    "BoxClass-CN/valid_category_data_total_zh.json ({categories, images, annotations}) and BoxClass-CN/images/"
)


@task(
    "boxclass-cn",
    "BoxClass-CN box classification (Chinese names), top-1/5",
    BOXCLASS_LAYOUT,
    groups=("boxes", "chinese"),
)
def boxclass_cn(encoder, data_root: Path) -> dict[str, float]:
    """BoxClass-CN: raw Chinese category names, no template (the reference protocol)."""
    _require_regions(encoder)
    root = data_root / "BoxClass-CN"
    data = json.loads(require(root / "valid_category_data_total_zh.json", "boxclass-cn", BOXCLASS_LAYOUT).read_text())
    images, boxes, labels, names = detection_set(data, lambda im: root / "images" / im["file_name"])
    return classify_boxes(encoder, images, boxes, labels, names, None)


# ---------------------------------------------------------------------------------------------------- FG-OVD

FGOVD_SPLITS = {
    "hard": "h_attributes_llava.jsonl",
    "medium": "m_attributes_llava.jsonl",
    "easy": "e_attributes_llava.jsonl",
    "trivial": "shuffle_negatives_llava.jsonl",
}


def fgovd(split: str):
    layout = (
        f"fgovd/{FGOVD_SPLITS[split]} (JSON lines: img_path, bbox xywh, pos_expression, neg_expression) with "
        "img_path under coco/"
    )

    def run(encoder, data_root: Path) -> dict[str, float]:
        _require_regions(encoder)
        path = require(data_root / "fgovd" / FGOVD_SPLITS[split], f"fgovd-{split}", layout)
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not items:
            raise MissingDataset(f"fgovd-{split}: {path} holds no item; expected {layout}")
        by_image: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_image[item["img_path"]].append(i)
        order = list(by_image)
        boxes = [
            xywh_to_xyxy(torch.tensor([items[i]["bbox"] for i in by_image[p]], dtype=torch.float32)) for p in order
        ]
        regions = reference_regions(encoder, [coco_path(data_root, p) for p in order], boxes)
        position = torch.tensor([i for p in order for i in by_image[p]])
        features = torch.empty(len(items), regions[0].shape[1])
        features[position] = torch.cat(regions)
        groups = [[item["pos_expression"][0], *item["neg_expression"]] for item in items]
        # the reference: softmax(100 · roi · textsᵀ), correct iff the positive's probability equals the maximum
        texts, mask = candidate_texts(encoder, groups)
        probabilities = box_probabilities(features, texts, mask)
        return {"accuracy": first_is_best(probabilities, mask), "n_items": len(items)}

    return run, layout


for _split in FGOVD_SPLITS:
    _run, _layout = fgovd(_split)
    register(
        Task(
            f"fgovd-{_split}",
            f"FG-OVD {_split}: the true description among its negatives",
            _layout,
            _run,
            ("boxes", "fgovd"),
        )
    )
