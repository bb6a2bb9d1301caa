"""Training-free open-vocabulary semantic segmentation (mIoU) on the eight SCLIP benchmarks, read from the
folders mmsegmentation's dataset configs use.

Protocol (SCLIP-style sliding-window inference, implemented here because mmseg's model code needs mmcv's
compiled ops, which do not build against current torch — see docs/benchmarks.md): resize each image so its short
side is ``SHORT_SIDE``; slide a square window of the model's input size with half-window stride; per window take
the normalised dense (patch) features, score them against the class embeddings (80 templates, ensembled) times
``LOGIT_SCALE``, upsample bilinearly to the window and average the overlaps; upsample to the label's size,
softmax over classes, and for sets with a background class label pixels whose best probability is below
``BACKGROUND_THRESHOLD`` as background. Class names and the label conventions (``reduce_zero_label``) come from
the ``fgclip-eval[seg]`` extra (mmsegmentation); mIoU is mmseg's ``IoUMetric`` definition (classes absent from
both prediction and label are left out), computed from one vectorised confusion matrix per image.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import shard, world
from ..images import UnreadableImage, open_rgb
from ..metrics import confusion_matrix, mean_iou
from ..zeroshot import clean, templates, zero_shot_classifier
from . import MissingDataset, NotApplicable, Task, register, require

SHORT_SIDE = 336
LOGIT_SCALE = 40.0
BACKGROUND_THRESHOLD = 0.1
IGNORE = 255


@dataclass(frozen=True)
class SegSet:
    """One benchmark: where its files are, which mmseg dataset class holds its class names, and its labels."""

    images: str  # folder of images, relative to the data root
    labels: str  # folder of label PNGs
    image_suffix: str
    label_suffix: str
    mmseg: tuple[str, str]  # (module file in mmseg/datasets, dataset class) holding METAINFO["classes"]
    split_file: str | None = None  # a list of stems (VOC / Context); None: every image in the folder
    reduce_zero_label: bool = False  # label 0 is ignored and the rest shift down by one
    drop_first_class: bool = False  # the class list without its first entry (background)
    first_classes: int | None = None  # keep only the first N classes (COCO-Object: the 80 things)
    background: bool = False  # class 0 is background: low-confidence pixels go to it
    recursive: bool = False  # images in per-city subfolders (Cityscapes)


VOC = "VOCdevkit/VOC2012"
CONTEXT = "VOCdevkit/VOC2010"
SETS: dict[str, SegSet] = {
    "voc21": SegSet(
        f"{VOC}/JPEGImages",
        f"{VOC}/SegmentationClass",
        ".jpg",
        ".png",
        ("voc.py", "PascalVOCDataset"),
        f"{VOC}/ImageSets/Segmentation/val.txt",
        background=True,
    ),
    "voc20": SegSet(
        f"{VOC}/JPEGImages",
        f"{VOC}/SegmentationClass",
        ".jpg",
        ".png",
        ("voc.py", "PascalVOCDataset"),
        f"{VOC}/ImageSets/Segmentation/val.txt",
        reduce_zero_label=True,
        drop_first_class=True,
    ),
    "context60": SegSet(
        f"{CONTEXT}/JPEGImages",
        f"{CONTEXT}/SegmentationClassContext",
        ".jpg",
        ".png",
        ("pascal_context.py", "PascalContextDataset"),
        f"{CONTEXT}/ImageSets/SegmentationContext/val.txt",
        background=True,
    ),
    "context59": SegSet(
        f"{CONTEXT}/JPEGImages",
        f"{CONTEXT}/SegmentationClassContext",
        ".jpg",
        ".png",
        ("pascal_context.py", "PascalContextDataset59"),
        f"{CONTEXT}/ImageSets/SegmentationContext/val.txt",
        reduce_zero_label=True,
    ),
    "ade20k": SegSet(
        "ade/ADEChallengeData2016/images/validation",
        "ade/ADEChallengeData2016/annotations/validation",
        ".jpg",
        ".png",
        ("ade.py", "ADE20KDataset"),
        reduce_zero_label=True,
    ),
    "cityscapes": SegSet(
        "cityscapes/leftImg8bit/val",
        "cityscapes/gtFine/val",
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        ("cityscapes.py", "CityscapesDataset"),
        recursive=True,
    ),
    "coco_stuff164k": SegSet(
        "coco_stuff164k/images/val2017",
        "coco_stuff164k/annotations/val2017",
        ".jpg",
        "_labelTrainIds.png",
        ("coco_stuff.py", "COCOStuffDataset"),
    ),
    # SCLIP's COCO-Object: background + the 80 thing classes, labels from its *_instanceTrainIds.png conversion
    "coco_object": SegSet(
        "coco_stuff164k/images/val2017",
        "coco_stuff164k/annotations/val2017",
        ".jpg",
        "_instanceTrainIds.png",
        ("coco_stuff.py", "COCOStuffDataset"),
        first_classes=80,
        background=True,
    ),
}


@cache
def mmseg_classes(module: str, class_name: str) -> tuple[str, ...]:
    """``METAINFO["classes"]`` of an mmseg dataset class, read from the installed source (importing
    ``mmseg.datasets`` needs mmcv's compiled ops)."""
    try:
        import mmseg
    except ImportError as err:
        raise NotApplicable("segmentation needs the mmsegmentation extra: pip install 'fgclip-eval[seg]'") from err
    tree = ast.parse((Path(mmseg.__file__).parent / "datasets" / module).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for statement in node.body:
                if isinstance(statement, ast.Assign) and getattr(statement.targets[0], "id", "") == "METAINFO":
                    keywords = {k.arg: k.value for k in statement.value.keywords}
                    return tuple(ast.literal_eval(keywords["classes"]))
    raise RuntimeError(f"no METAINFO classes for {class_name} in mmseg/datasets/{module}")


def classnames(spec: SegSet) -> list[str]:
    names = list(mmseg_classes(*spec.mmseg))
    if spec.first_classes:
        names = ["background", *names[: spec.first_classes]]
    if spec.drop_first_class:
        names = names[1:]
    return [clean(n) for n in names]


def samples(name: str, spec: SegSet, data_root: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs in sorted order (or split-file order)."""
    layout = f"mmsegmentation's layout: {spec.images}/*{spec.image_suffix} and {spec.labels}/*{spec.label_suffix}"
    images = require(data_root / spec.images, name, layout)
    labels = require(data_root / spec.labels, name, layout)
    if spec.split_file:
        stems = require(data_root / spec.split_file, name, f"{layout} and {spec.split_file}").read_text().split()
        pairs = [(images / f"{s}{spec.image_suffix}", labels / f"{s}{spec.label_suffix}") for s in stems]
    else:
        pattern = f"**/*{spec.image_suffix}" if spec.recursive else f"*{spec.image_suffix}"
        pairs = []
        for image in sorted(images.glob(pattern)):
            relative = image.relative_to(images).as_posix()[: -len(spec.image_suffix)]
            pairs.append((image, labels / f"{relative}{spec.label_suffix}"))
    if not pairs:
        raise MissingDataset(f"{name}: no image in {images}; expected {layout}")
    return pairs


def read_label(path: Path, spec: SegSet) -> torch.Tensor:
    from PIL import Image

    if not path.is_file():
        raise MissingDataset(f"missing label map {path}")
    try:
        with Image.open(path) as image:
            label = torch.from_numpy(np.array(image, dtype=np.int64))
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
        raise UnreadableImage(f"unreadable label map ({type(err).__name__}): {path}") from err
    if spec.reduce_zero_label:
        label = torch.where(label == 0, IGNORE, label - 1)
        label[label == IGNORE - 1] = IGNORE
    return label


NAFLEX_WINDOW = 224  # NaFlex models have no fixed input size: square 224-pixel windows (196 patches of 16)


def window_size(encoder) -> int:
    if encoder.capabilities.naflex:
        return NAFLEX_WINDOW
    return int(encoder.model.config.vision_config.image_size)


def windows(length: int, crop: int, stride: int) -> list[int]:
    """Window starts covering ``length`` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return [*starts, length - crop]


@torch.no_grad()
def segment(encoder, image, class_embeddings: torch.Tensor, out_hw: tuple[int, int], background: bool) -> torch.Tensor:
    """[H, W] predicted class indices for one PIL image."""
    scale = SHORT_SIDE / min(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    image = image.resize((width, height), resample=3)  # bicubic
    crop = window_size(encoder)
    stride = crop // 2
    boxes = [(x, y) for y in windows(height, crop, stride) for x in windows(width, crop, stride)]
    crops = [image.crop((x, y, x + crop, y + crop)) for x, y in boxes]
    logits = torch.zeros(len(class_embeddings), max(height, crop), max(width, crop))
    counts = torch.zeros(1, *logits.shape[1:])
    for start in range(0, len(crops), encoder.batch_size):
        maps = encoder.dense(crops[start : start + encoder.batch_size])
        for (x, y), dense in zip(boxes[start : start + encoder.batch_size], maps, strict=True):
            window = (dense @ class_embeddings.T).permute(2, 0, 1)[None] * LOGIT_SCALE  # [1, C, h, w]
            window = F.interpolate(window, size=(crop, crop), mode="bilinear", align_corners=False)[0]
            logits[:, y : y + crop, x : x + crop] += window
            counts[:, y : y + crop, x : x + crop] += 1
    logits = (logits / counts.clamp(min=1))[:, :height, :width]
    logits = F.interpolate(logits[None], size=out_hw, mode="bilinear", align_corners=False)[0]
    probabilities = logits.softmax(dim=0)
    best, predicted = probabilities.max(dim=0)
    if background:
        predicted[best < BACKGROUND_THRESHOLD] = 0
    return predicted


def segmentation_task(name: str):
    spec = SETS[name]

    def run(encoder, data_root: Path) -> dict[str, float]:
        if not encoder.has_regions:
            raise NotApplicable(f"the {encoder.family} family has no dense features")
        names = classnames(spec)
        pairs = samples(name, spec, data_root)
        embeddings = zero_shot_classifier(encoder, names, templates(), walk="box")
        confusion = torch.zeros(len(names), len(names), dtype=torch.long)
        part = shard(len(pairs))
        progress = _progress(encoder, f"{name} ({len(part)} images)", len(part))
        window = window_size(encoder) // encoder.model.config.vision_config.patch_size
        with encoder.fixed_patches(window * window):
            for index in part:
                image_path, label_path = pairs[index]
                label = read_label(label_path, spec)
                predicted = segment(encoder, open_rgb(image_path), embeddings, tuple(label.shape), spec.background)
                confusion += confusion_matrix(predicted, label, len(names), IGNORE)
                progress.update()
        progress.close()
        if world()[1] > 1:
            torch.distributed.all_reduce(confusion)
        miou, _ = mean_iou(confusion)
        accuracy = (confusion.diag().sum() / confusion.sum().clamp(min=1)).item()
        return {"miou": miou, "pixel_accuracy": accuracy, "n_images": len(pairs)}

    return run


def _progress(encoder, desc: str, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not encoder.progress, leave=False, unit="image")


for _name, _spec in SETS.items():
    register(
        Task(
            _name,
            f"{_name} open-vocabulary segmentation mIoU",
            f"{_spec.images}/*{_spec.image_suffix} + {_spec.labels}/*{_spec.label_suffix}",
            segmentation_task(_name),
            ("segmentation",),
        )
    )
