"""Tiny benchmark data sets written in each benchmark's real on-disk layout, and a fake encoder with known features.

Every image is painted in colours that encode integer ids (``colour(k)``); the :class:`FakeEncoder` reads those
colours back and maps them, and the ``id<k>`` tokens (or registered exact strings) of texts, to one-hot vectors.
So a task that reads the layout correctly scores exactly what the test computes by hand, and a reader that
mis-pairs images and texts does not.
"""

from __future__ import annotations

import json
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import fgclip_model
from fgclip_eval.images import open_rgb
from fgclip_eval.protocols import protocol_of

DIM = 1100
UNKNOWN = DIM - 1


def colour(k: int) -> tuple[int, int, int]:
    return (k % 32) * 8 + 4, (k // 32) * 8 + 4, 200


def decode(rgb) -> int:
    r, g, _ = (int(v) for v in rgb)
    return (r // 8) + 32 * (g // 8)


def paint(path: Path, k: int, size=(24, 24), boxes: list[tuple[list[float], int]] = ()) -> Path:
    """A solid image of id ``k`` with each (xyxy box, id) painted in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour(k))
    draw = ImageDraw.Draw(image)
    for box, j in boxes:
        draw.rectangle([round(v) for v in box], fill=colour(j))
    image.save(path, quality=100) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)
    return path


class FakeEncoder:
    """An Encoder look-alike: image -> one-hot of its (0, 0) colour id, region -> of its box-centre colour id,
    dense -> per 8x8 cell, text -> ``text_ids[text]`` or its ``id<k>`` token (else an 'unknown' axis)."""

    def __init__(self, text_ids: dict[str, int] | None = None, family: str = "fgclip") -> None:
        self.text_ids = text_ids or {}
        self.family = family
        self.batch_size = 4
        self.progress = False
        self.max_num_patches = None
        self.model = SimpleNamespace(
            config=SimpleNamespace(vision_config=SimpleNamespace(image_size=32, patch_size=16))
        )
        self.seen_walks: list[str] = []
        self.patch_budgets: list[int] = []

    capabilities = property(lambda self: fgclip_model.get_model_family(self.family))
    has_regions = property(lambda self: self.capabilities.regions)
    protocol = property(lambda self: protocol_of(self.capabilities))

    def scores(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine  # one-hot features: the sigmoid of FG-CLIP 2 is tested on real models

    @contextmanager
    def fixed_patches(self, budget: int):
        self.patch_budgets.append(budget)
        yield self

    @staticmethod
    def one_hot(ids) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.as_tensor(ids, dtype=torch.long), DIM).float()

    def images(self, items) -> torch.Tensor:
        return self.one_hot([decode(open_rgb(items[i]).getpixel((0, 0))) for i in range(len(items))])

    def text_id(self, text: str) -> int:
        if text in self.text_ids:
            return self.text_ids[text]
        match = re.search(r"\bid(\d+)\b", text)
        return int(match.group(1)) if match else UNKNOWN

    def texts(self, texts, walk="short", lowercase=True) -> torch.Tensor:
        self.seen_walks.append(walk)
        return self.one_hot([self.text_id(t) for t in texts]).reshape(len(texts), DIM)

    def regions(self, items, boxes, pixels=False, normalize=True):
        out = []
        for item, b in zip(items, boxes, strict=True):
            image = open_rgb(item)
            b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
            scale = torch.tensor([1, 1, 1, 1]) if pixels else torch.tensor([image.width, image.height] * 2)
            centres = ((b[:, :2] + b[:, 2:]) / 2 * scale[:2]).tolist()
            out.append(self.one_hot([decode(image.getpixel((int(x), int(y)))) for x, y in centres]).reshape(-1, DIM))
        return out

    def dense(self, images):
        """Per 8x8 cell, the one-hot of its colour id; no evidence (zeros) where the colour is not a painted one
        (resampling blurs the colours at class borders)."""
        maps = []
        for image in images:
            w, h = image.width // 8, image.height // 8
            pixels = torch.tensor([[image.getpixel((8 * x + 4, 8 * y + 4)) for x in range(w)] for y in range(h)])
            ids = (pixels[..., 0] // 8) + 32 * (pixels[..., 1] // 8)
            exact = (pixels - torch.tensor([colour(int(k)) for k in ids.flatten()]).reshape(h, w, 3)).abs().amax(-1)
            maps.append(self.one_hot(ids) * (exact <= 2)[..., None])
        return maps


@pytest.fixture
def fake():
    return FakeEncoder


@pytest.fixture
def files():
    """The layout helpers (``paint`` an image of an id, ``write_text``, ``write_json``) for tests' own layouts."""
    return SimpleNamespace(paint=paint, write_text=write_text, write_json=write_json)


# ------------------------------------------------------------------------------------------------ layouts


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def build_retrieval(root: Path) -> None:
    coco = root / "coco"
    # COCO captions: 4 images listed out of id order; image 7 has 6 captions (only the first 5 count); caption
    # "id3" of image 9 is a deliberate miss
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (9, 2, 7, 4)]
    for im in images:
        paint(coco / "images" / "val2017" / im["file_name"], im["id"])
    annotations = []
    for im in images:
        n = 6 if im["id"] == 7 else 5
        for j in range(n):
            target = 3 if (im["id"] == 9 and j == 0) else im["id"]
            annotations.append({"image_id": im["id"], "id": len(annotations), "caption": f"A photo id{target} n{j}"})
    annotations[10 + 5]["caption"] = "caption beyond the fifth id999"  # image 7's sixth caption: must be dropped
    write_json(coco / "annotations" / "captions_val2017.json", {"images": images, "annotations": annotations})

    flickr = root / "flickr30k"
    records = []
    for k in (11, 12, 13):
        paint(flickr / "flickr30k-images" / f"{k}.jpg", k)
        records.append({"image": f"flickr30k-images/{k}.jpg", "caption": [f"id{k} c{j}" for j in range(5)]})
    write_json(flickr / "flickr30k_test.json", records)

    share = []
    for k in range(1003):  # only the first 1000 count; the last three have no image at all
        if k < 1000:
            paint(root / "coco" / "train2017" / f"{k:012d}.jpg", k, size=(8, 8))
        caption = f"a long caption id{k}"
        share.append({"id": k, "image": f"coco/train2017/{k:012d}.jpg", "conversations": [{}, {"value": caption}]})
    write_json(root / "sharegpt4v" / "share-captioner_coco_lcs_sam_1246k_1107.json", share)

    dci = root / "dci" / "densely_captioned_images"
    for k in (21, 22, 23):
        paint(dci / "photos" / f"sa_{k}.jpg", k)
        write_json(dci / "annotations" / f"sa_{k}.json", {"image": f"sa_{k}.jpg", "extra_caption": f"dense id{k}"})

    for k in (31, 32):
        paint(root / "Urban1k" / "image" / f"{k}.jpg", k)
        write_text(root / "Urban1k" / "caption" / f"{k}.txt", f"urban id{k}\nsecond line id999\n")

    lines = []
    for k, split in ((41, "val2014"), (42, "train2014")):
        name = f"COCO_{split}_{k:012d}"
        paint(root / "coco" / split / f"{name}.jpg", k)
        lines += [f"{name}#zhm#{j} 中文 id{k}" for j in range(5)]
    write_text(root / "coco-cn" / "pair.txt", "\n".join(lines) + "\n")

    lines = []
    for k in (51, 52):
        paint(root / "flickr30k" / "flickr30k-images" / f"{k}.jpg", k)
        lines += [f"{k}#{j}\t一只狗 id{k}" for j in range(5)]
    write_text(root / "flickr30k-cna" / "flickr30k_cna_test.txt", "\n".join(lines) + "\n")

    for folder, file, base in (
        ("LIT-CN", "image_caption_long_cn.txt", 61),
        ("DCI-CN", "image_caption_trans.txt", 64),
        ("DOCCI-CN", "image_caption_trans.txt", 67),
    ):
        rows = []
        for k in range(base, base + 3):
            paint(root / folder / "images" / f"{k}.jpg", k)
            rows.append(f"images/{k}.jpg\t长描述 id{k}")
        write_text(root / folder / file, "\n".join(rows) + "\n")


def build_classification(root: Path) -> dict:
    expected = {}
    # ImageNet: 1000 synset folders; images of classes 0, 1 and 999 (label = sorted-wnid index)
    val = root / "imagenet" / "data" / "val_images"
    for label in range(1000):
        (val / f"n{label:08d}").mkdir(parents=True, exist_ok=True)
    for label in (0, 1, 999):
        paint(val / f"n{label:08d}" / f"ILSVRC2012_val_{label:08d}.JPEG", label, size=(8, 8))
    v2 = root / "imagenetv2-matched-frequency-format-val"
    for label in (2, 10, 998):  # folder names are ints: 10 sorts after 2
        paint(v2 / str(label) / "a.jpeg", label, size=(8, 8))
    expected["imagenet"] = [0, 1, 999]

    # CIFAR-10 / -100: the python pickles
    def cifar(folder: str, file: str, meta: str, names_key: str, labels_key: str, names: list[str]):
        base = root / folder
        base.mkdir(parents=True, exist_ok=True)
        labels = [1, 0, 2]
        data = np.stack([np.full((3, 32, 32), 0, np.uint8) for _ in labels])
        for i, label in enumerate(labels):
            for c, v in enumerate(colour(label)):
                data[i, c] = v
        with open(base / file, "wb") as f:
            pickle.dump({"data": data.reshape(len(labels), -1), labels_key: labels}, f)
        with open(base / meta, "wb") as f:
            pickle.dump({names_key: names}, f)

    cifar("cifar-10-batches-py", "test_batch", "batches.meta", "label_names", "labels", ["id0", "id1", "id2"])
    cifar("cifar-100-python", "test", "meta", "fine_label_names", "fine_labels", ["id0", "id1", "id2"])

    food = root / "food-101"
    meta = {"id0_cake": ["id0_cake/1"], "id1_soup": ["id1_soup/2", "id1_soup/3"]}
    for cls, items in meta.items():
        for item in items:
            paint(food / "images" / f"{item}.jpg", int(cls[2]))
    write_json(food / "meta" / "test.json", meta)

    sun = root / "SUN397"
    write_text(sun / "ClassName.txt", "/a/abbey_id0\n/b/bar_id1/indoor\n")
    paint(sun / "a" / "abbey_id0" / "sun_a.jpg", 0)
    paint(sun / "b" / "bar_id1" / "indoor" / "sun_b.jpg", 1)

    from scipy.io import savemat

    cars = root / "stanford_cars"
    (cars / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(cars / "devkit" / "cars_meta.mat", {"class_names": np.array(["Car id0", "Car id1"], dtype=object)})
    annotations = np.array([("00001.jpg", 2), ("00002.jpg", 1)], dtype=[("fname", "O"), ("class", "O")])
    savemat(cars / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    paint(cars / "cars_test" / "00001.jpg", 1)
    paint(cars / "cars_test" / "00002.jpg", 0)

    air = root / "fgvc-aircraft-2013b" / "data"
    write_text(air / "variants.txt", "707-320 id0\nA380 id1\n")
    write_text(air / "images_variant_test.txt", "0001 A380 id1\n0002 707-320 id0\n")
    paint(air / "images" / "0001.jpg", 1)
    paint(air / "images" / "0002.jpg", 0)

    dtd = root / "dtd" / "dtd"
    write_text(dtd / "labels" / "test1.txt", "banded_id0/b_1.jpg\nzigzag_id1/z_1.jpg\n")
    paint(dtd / "images" / "banded_id0" / "b_1.jpg", 0)
    paint(dtd / "images" / "zigzag_id1" / "z_1.jpg", 1)

    pets = root / "oxford-iiit-pet"
    write_text(pets / "annotations" / "test.txt", "Abyssinian_1 1 1 1\nbeagle_2 2 2 1\n")
    (pets / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    paint(pets / "images" / "Abyssinian_1.jpg", 0)
    paint(pets / "images" / "beagle_2.jpg", 1)
    expected["pets"] = ["Abyssinian", "Beagle"]

    cal = root / "caltech101" / "101_ObjectCategories"
    paint(cal / "BACKGROUND_Google" / "image_0001.jpg", 5)
    paint(cal / "accordion_id0" / "image_0001.jpg", 0)
    paint(cal / "airplanes_id1" / "image_0001.jpg", 1)
    paint(cal / "airplanes_id1" / "image_0002.jpg", 1)

    flowers = root / "flowers-102"
    flowers.mkdir(parents=True, exist_ok=True)
    savemat(flowers / "setid.mat", {"tstid": np.array([2, 3]), "trnid": np.array([1]), "valid": np.array([1])})
    savemat(flowers / "imagelabels.mat", {"labels": np.array([5, 102, 1])})
    for image_id, label in ((2, 101), (3, 0)):
        paint(flowers / "jpg" / f"image_{image_id:05d}.jpg", label)
    write_text(flowers / "classnames.txt", "\n".join(f"flower id{i}" for i in range(102)) + "\n")
    return expected


def build_boxes(root: Path) -> None:
    # COCO instances: two images, category ids 1 and 3 (index 0 and 1 in id order); boxes painted in class colours
    folder = root / "coco" / "images" / "val2017"
    categories = [{"id": 3, "name": "car id1"}, {"id": 1, "name": "person id0"}]
    paint(folder / "000000000005.jpg", 900, size=(64, 48), boxes=[([4, 4, 20, 20], 0), ([30, 10, 60, 40], 1)])
    paint(folder / "000000000006.jpg", 901, size=(64, 48), boxes=[([10, 20, 30, 46], 1)])
    annotations = [
        {"image_id": 5, "bbox": [4, 4, 16, 16], "category_id": 1},
        {"image_id": 5, "bbox": [30, 10, 30, 30], "category_id": 3},
        {"image_id": 6, "bbox": [10, 20, 20, 26], "category_id": 1},  # wrong on purpose: painted as class 1
    ]
    images = [{"id": 5, "file_name": "000000000005.jpg"}, {"id": 6, "file_name": "000000000006.jpg"}]
    write_json(
        root / "coco" / "annotations" / "instances_val2017.json",
        {"images": images, "annotations": annotations, "categories": categories},
    )

    # LVIS: one val2017 image and one train2017 image (the reference skipped the latter)
    paint(root / "coco" / "images" / "train2017" / "000000000008.jpg", 902, size=(64, 48), boxes=[([8, 8, 40, 40], 2)])
    lvis_images = [
        {"id": 5, "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg"},
        {"id": 8, "coco_url": "http://images.cocodataset.org/train2017/000000000008.jpg"},
    ]
    lvis_categories = [{"id": i + 1, "name": f"thing_id{i}"} for i in range(3)]
    lvis_annotations = [
        {"image_id": 5, "bbox": [4, 4, 16, 16], "category_id": 1},
        {"image_id": 8, "bbox": [8, 8, 32, 32], "category_id": 3},
    ]
    write_json(
        root / "lvis" / "lvis_v1_val.json",
        {"images": lvis_images, "annotations": lvis_annotations, "categories": lvis_categories},
    )

    box = root / "BoxClass-CN"
    paint(box / "images" / "x.jpg", 903, size=(64, 48), boxes=[([0, 0, 31, 47], 1), ([32, 0, 63, 47], 0)])
    write_json(
        box / "valid_category_data_total_zh.json",
        {
            "categories": [{"id": 1, "name": "猫 id0"}, {"id": 2, "name": "狗 id1"}],
            "images": [{"id": 1, "file_name": "x.jpg"}],
            "annotations": [
                {"image_id": 1, "bbox": [0, 0, 31, 47], "category_id": 2},
                {"image_id": 1, "bbox": [32, 0, 31, 47], "category_id": 1},
            ],
        },
    )

    # FG-OVD: 3 items on two images; the positive is painted in 2 of them, and one item has only 2 negatives
    items = [
        {
            "img_path": "val2017/000000000005.jpg",
            "bbox": [4, 4, 16, 16],
            "pos_expression": ["id0 a red car"],
            "neg_expression": ["id7", "id8", "id9"],
        },
        {
            "img_path": "val2017/000000000005.jpg",
            "bbox": [30, 10, 30, 30],
            "pos_expression": ["id1 blue"],
            "neg_expression": ["id6", "id5"],
        },
        {
            "img_path": "train2017/000000000008.jpg",
            "bbox": [8, 8, 32, 32],
            "pos_expression": ["id4 wrong"],
            "neg_expression": ["id2", "id3"],
        },
    ]
    for split in ("h_attributes_llava", "m_attributes_llava", "e_attributes_llava", "shuffle_negatives_llava"):
        write_text(root / "fgovd" / f"{split}.jsonl", "\n".join(json.dumps(i) for i in items) + "\n")


LEFT, RIGHT = 0, 33  # painted ids: colours differing in red and green, so no blend of the two is a third id


def build_segmentation(root: Path) -> None:
    """Every image: the left half painted LEFT, the right half RIGHT; label maps carry each set's class values."""

    def pair(image: Path, label: Path, label_values: tuple[int, int], size=(96, 64)):
        w, h = size
        paint(image, LEFT, size=size, boxes=[([w // 2, 0, w - 1, h - 1], RIGHT)])
        array = np.zeros((h, w), np.uint8)
        array[:, : w // 2], array[:, w // 2 :] = label_values
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(label)

    voc = root / "VOCdevkit" / "VOC2012"
    write_text(voc / "ImageSets" / "Segmentation" / "val.txt", "2007_000001\n")
    pair(voc / "JPEGImages" / "2007_000001.jpg", voc / "SegmentationClass" / "2007_000001.png", (0, 15))
    ctx = root / "VOCdevkit" / "VOC2010"
    write_text(ctx / "ImageSets" / "SegmentationContext" / "val.txt", "2008_000002\n")
    pair(ctx / "JPEGImages" / "2008_000002.jpg", ctx / "SegmentationClassContext" / "2008_000002.png", (1, 2))
    ade = root / "ade" / "ADEChallengeData2016"
    pair(ade / "images" / "validation" / "a.jpg", ade / "annotations" / "validation" / "a.png", (1, 3))
    city = root / "cityscapes"
    pair(
        city / "leftImg8bit" / "val" / "bonn" / "b_leftImg8bit.png",
        city / "gtFine" / "val" / "bonn" / "b_gtFine_labelTrainIds.png",
        (0, 18),
    )
    stuff = root / "coco_stuff164k"
    pair(stuff / "images" / "val2017" / "c.jpg", stuff / "annotations" / "val2017" / "c_labelTrainIds.png", (0, 170))
    label = np.zeros((64, 96), np.uint8)
    label[:, 48:] = 3
    Image.fromarray(label).save(stuff / "annotations" / "val2017" / "c_instanceTrainIds.png")


@pytest.fixture(scope="session")
def benchmark_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("benchmarks")
    build_retrieval(root)
    expected = build_classification(root)
    build_boxes(root)
    build_segmentation(root)
    return root, expected
