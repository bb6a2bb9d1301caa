"""Zero-shot image↔text retrieval: COCO 5k, Flickr30k 1k, ShareGPT4V-1k, DCI, Urban1k and the Chinese sets
(COCO-CN, Flickr30k-CNA, LIT-CN, DCI-CN, DOCCI-CN), in the layouts their releases ship.

Every benchmark is read into a :class:`Pairs` (image paths, texts, the image of each text) and scored by one
function: normalised features, the family's reference scores (cosine, or FG-CLIP 2's sigmoid), vectorised R@k
both ways with the reference script's tie rule. Differences from the reference scripts: file orders are sorted
(not ``os.listdir``), counts come from the data (never hard-coded), and paths are joined properly (no
trailing-slash concatenation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..metrics import image_to_text_recall, text_to_image_recall
from . import BadDataset, MissingDataset, Task, first_existing, register, require, task
from .coco import COCO_LAYOUT, coco_images_folder


@dataclass
class Pairs:
    images: list[Path]
    texts: list[str]
    text_to_image: torch.Tensor  # [T] index into images


def score(
    encoder, pairs: Pairs, walk: str, ks: tuple[int, ...], lowercase: bool = True, rule: str = "argsort"
) -> dict[str, float]:
    """I2T and T2I R@k of ``pairs`` under ``encoder``, with the texts on the ``walk`` path, ranking the family's
    reference scores (cosine, or FG-CLIP 2's sigmoid) with the benchmark's tie rule."""
    cosine = encoder.images(pairs.images) @ encoder.texts(pairs.texts, walk, lowercase=lowercase).T
    similarity = encoder.scores(cosine)
    i2t = image_to_text_recall(similarity, pairs.text_to_image, ks, rule)
    t2i = text_to_image_recall(similarity, pairs.text_to_image, ks, rule)
    return {**{f"i2t_r{k}": v for k, v in i2t.items()}, **{f"t2i_r{k}": v for k, v in t2i.items()}}


def grouped(captions: list[tuple[Path, str]], per_image: int | None = None) -> Pairs:
    """Pairs from (image, caption) rows: images in order of first appearance, at most ``per_image`` captions each."""
    index: dict[Path, int] = {}
    kept: dict[Path, int] = {}
    texts, owners = [], []
    for image, caption in captions:
        i = index.setdefault(image, len(index))
        if per_image is not None and kept.get(image, 0) >= per_image:
            continue
        kept[image] = kept.get(image, 0) + 1
        texts.append(caption)
        owners.append(i)
    return Pairs(list(index), texts, torch.tensor(owners, dtype=torch.long))


def one_to_one(images: list[Path], texts: list[str]) -> Pairs:
    return Pairs(images, texts, torch.arange(len(images)))


# ----------------------------------------------------------------------------------------------------- readers


def read_coco(data_root: Path) -> Pairs:
    """5000 val2017 images in ascending id order, the first 5 captions of each in annotation order."""
    annotations = require(data_root / "coco" / "annotations" / "captions_val2017.json", "coco", COCO_LAYOUT)
    folder = coco_images_folder(data_root, "val2017", "coco", COCO_LAYOUT)
    data = json.loads(annotations.read_text())
    files = {image["id"]: folder / image["file_name"] for image in data["images"]}
    by_image: dict[int, list[str]] = {i: [] for i in sorted(files)}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann["caption"])
    return grouped([(files[i], c) for i, caps in by_image.items() for c in caps[:5]])


FLICKR_LAYOUT = "flickr30k/flickr30k-images/*.jpg and flickr30k/flickr30k_test.json ([{image, caption: [5]}])"


def read_flickr30k(data_root: Path) -> Pairs:
    root = data_root / "flickr30k"
    annotations = require(root / "flickr30k_test.json", "flickr30k", FLICKR_LAYOUT)
    folder = require(root / "flickr30k-images", "flickr30k", FLICKR_LAYOUT)
    rows = []
    for record in json.loads(annotations.read_text()):
        captions = record["caption"] if isinstance(record["caption"], list) else [record["caption"]]
        rows += [(folder / Path(record["image"]).name, c) for c in captions]
    return grouped(rows)


STANDARD = (1, 5, 10)
FLICKR_FULL_LAYOUT = (
    "flickr30k/results_20130124.token (the official 158,915 captions, lines '<name>.jpg#<k><TAB><caption>') and "
    "flickr30k/flickr30k-images/"
)


def read_flickr30k_full(data_root: Path) -> Pairs:
    """All of Flickr30k as Long-CLIP's script reads it: every caption line, the image of every 5th line."""
    root = data_root / "flickr30k"
    path = require(root / "results_20130124.token", "flickr30k-full", FLICKR_FULL_LAYOUT)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab or "#" not in key:
            raise BadDataset(f"{path}:{number}: expected '<name>.jpg#<k><TAB><caption>', got {line!r}")
        rows.append((root / "flickr30k-images" / key.rsplit("#", 1)[0], caption.strip()))
    return grouped(rows)


@task(
    "flickr30k-full",
    "Flickr30k, all 31,783 images x 158,915 captions (Long-CLIP's protocol): R@1/5/10",
    FLICKR_FULL_LAYOUT,
    groups=("retrieval",),
)
def flickr30k_full(encoder, data_root: Path) -> dict[str, float]:
    return score_softmax_topk(encoder, read_flickr30k_full(data_root), "short", STANDARD)


def score_softmax_topk(encoder, pairs: Pairs, walk: str, ks: tuple[int, ...]) -> dict[str, float]:
    """Long-CLIP's Flickr30k protocol: R@k by ``topk`` of ``softmax(cos)`` per image (over all texts) and per text
    (over all images), computed in row chunks (the full matrix has 5e9 entries)."""
    images = encoder.images(pairs.images)
    texts = encoder.texts(pairs.texts, walk)
    owners, n_images = pairs.text_to_image, len(pairs.images)
    out: dict[str, float] = {}
    for k in ks:
        hits = 0
        for start in range(0, n_images, 1024):
            top = (images[start : start + 1024] @ texts.T).softmax(dim=-1).topk(min(k, len(texts)), dim=1).indices
            hits += (owners[top] == torch.arange(start, start + len(top))[:, None]).any(dim=1).sum().item()
        out[f"i2t_r{k}"] = hits / n_images
    for k in ks:
        hits = 0
        for start in range(0, len(texts), 4096):
            top = (texts[start : start + 4096] @ images.T).softmax(dim=-1).topk(min(k, n_images), dim=1).indices
            hits += (top == owners[start : start + 4096, None]).any(dim=1).sum().item()
        out[f"t2i_r{k}"] = hits / len(texts)
    return out


SHAREGPT4V_FILE = "share-captioner_coco_lcs_sam_1246k_1107.json"
SHAREGPT4V_LAYOUT = (
    f"sharegpt4v/{SHAREGPT4V_FILE} (or ShareGPT4V's own sharegpt4v/data/sharegpt4v/{SHAREGPT4V_FILE}) with the "
    "records' images under ShareGPT4V's data folder (sharegpt4v/data/coco/train2017/...) or coco/train2017/"
)


def read_sharegpt4v_1k(data_root: Path) -> Pairs:
    """The first 1000 records: caption = the captioner's answer; image = the record's path relative to ShareGPT4V's
    ``data/`` folder (``coco/train2017/...``, as ShareGPT4V lays its data out), else ``coco/train2017/<basename>``
    (where the reference script looks)."""
    import ijson

    base = data_root / "sharegpt4v"
    path = first_existing(
        [base / SHAREGPT4V_FILE, base / "data" / "sharegpt4v" / SHAREGPT4V_FILE], "sharegpt4v-1k", SHAREGPT4V_LAYOUT
    )
    images, texts = [], []
    with path.open("rb") as stream:
        for record in ijson.items(stream, "item"):
            name = record["image"]
            candidates = [base / "data" / name, base / name, data_root / "coco" / "train2017" / Path(name).name]
            images.append(next((c for c in candidates if c.exists()), candidates[-1]))
            texts.append(record["conversations"][1]["value"])
            if len(images) == 1000:
                break
    return one_to_one(images, texts)


DCI_LAYOUT = (
    "dci/densely_captioned_images/annotations/*.json ({image, extra_caption}) with the SA-1B images in "
    "dci/densely_captioned_images/photos/ (or sam/images/138/)"
)


def read_dci(data_root: Path) -> Pairs:
    root = data_root / "dci" / "densely_captioned_images"
    files = sorted(require(root / "annotations", "dci", DCI_LAYOUT).glob("*.json"))
    if not files:
        raise MissingDataset(f"dci: no *.json in {root / 'annotations'}; expected {DCI_LAYOUT}")
    images, texts = [], []
    for file in files:
        record = json.loads(file.read_text())
        photo = root / "photos" / record["image"]
        images.append(photo if photo.exists() else data_root / "sam" / "images" / "138" / record["image"])
        texts.append(record["extra_caption"])
    return one_to_one(images, texts)


URBAN_LAYOUT = "Urban1k/image/<stem>.jpg and Urban1k/caption/<stem>.txt"


def read_urban1k(data_root: Path) -> Pairs:
    root = data_root / "Urban1k"
    captions = sorted(require(root / "caption", "urban1k", URBAN_LAYOUT).glob("*.txt"))
    texts = [c.read_text(encoding="utf-8").splitlines()[0].strip() for c in captions]
    return one_to_one([root / "image" / f"{c.stem}.jpg" for c in captions], texts)


COCO_CN_LAYOUT = "coco-cn/pair.txt (lines 'COCO_val2014_<id>#zhm#<k> <caption>') and coco/{train2014,val2014}/"


def read_coco_cn(data_root: Path) -> Pairs:
    path = require(data_root / "coco-cn" / "pair.txt", "coco-cn", COCO_CN_LAYOUT)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, caption = line.strip().partition(" ")
        name = key.split("#")[0]
        split = "train2014" if "_train2014_" in name else "val2014"
        if not caption:
            raise BadDataset(f"{path}:{number}: expected '<image>#zhm#<k> <caption>', got {line!r}")
        rows.append((data_root / "coco" / split / f"{name}.jpg", caption.strip()))
    return grouped(rows)


FLICKR_CNA_LAYOUT = (
    "flickr30k-cna/flickr30k_cna_test.txt (lines '<image>#<k>\\t<caption>') and flickr30k/flickr30k-images/"
)


def read_flickr30k_cna(data_root: Path) -> Pairs:
    path = require(data_root / "flickr30k-cna" / "flickr30k_cna_test.txt", "flickr30k-cna", FLICKR_CNA_LAYOUT)
    folder = data_root / "flickr30k" / "flickr30k-images"
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab:
            raise BadDataset(f"{path}:{number}: expected '<image>#<k><TAB><caption>', got {line!r}")
        name = key.split("#")[0]
        rows.append((folder / (name if name.endswith(".jpg") else f"{name}.jpg"), caption.strip()))
    return grouped(rows)


def tab_file_reader(task: str, relative: str):
    """Readers of the long Chinese sets: one ``image_path<TAB>caption`` per line, image paths relative to the file's
    folder (or absolute)."""
    layout = f"{relative} (lines 'image_path<TAB>caption', paths relative to that folder or absolute)"

    def read(data_root: Path) -> Pairs:
        path = require(data_root / relative, task, layout)
        images, texts = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            image, tab, caption = line.partition("\t")
            if not tab:
                raise BadDataset(f"{path}:{number}: expected 'image_path<TAB>caption', got {line!r}")
            images.append(path.parent / image.strip())
            texts.append(caption.strip())
        return one_to_one(images, texts)

    return read, layout


# --------------------------------------------------------------------------------------------------- registry


def retrieval_task(
    name, description, reader, layout, walk, ks, lowercase=True, groups=("retrieval",), rule="argsort"
) -> Task:
    """A retrieval benchmark; ``rule``: the reference script's tie-breaking (``argsort`` tail in the FG-CLIP and
    Long-CLIP COCO scripts, the first ``argmax`` in Long-CLIP's Urban1k)."""

    def run(encoder, data_root: Path) -> dict[str, float]:
        return score(encoder, reader(data_root), walk, ks, lowercase, rule)

    return register(Task(name, description, layout, run, groups))


retrieval_task(
    "coco", "COCO val2017 5k: R@1/5/10 both ways, 5 captions per image", read_coco, COCO_LAYOUT, "short", STANDARD
)
retrieval_task("flickr30k", "Flickr30k 1k test: R@1/5/10 both ways", read_flickr30k, FLICKR_LAYOUT, "short", STANDARD)
retrieval_task(
    "sharegpt4v-1k",
    "ShareGPT4V-1k long captions: R@1",
    read_sharegpt4v_1k,
    SHAREGPT4V_LAYOUT,
    "long",
    (1,),
    groups=("retrieval", "long"),
)
retrieval_task("dci", "DCI long captions: R@1", read_dci, DCI_LAYOUT, "long", (1,), groups=("retrieval", "long"))
retrieval_task(
    "urban1k",
    "Urban1k long captions: R@1",
    read_urban1k,
    URBAN_LAYOUT,
    "long",
    (1,),
    groups=("retrieval", "long"),
    rule="argmax",
)
retrieval_task(
    "coco-cn",
    "COCO-CN 1k images x 5 Chinese captions: R@1/5/10",
    read_coco_cn,
    COCO_CN_LAYOUT,
    "short",
    STANDARD,
    groups=("retrieval", "chinese"),
)
retrieval_task(
    "flickr30k-cna",
    "Flickr30k-CNA 1k test, Chinese: R@1/5/10",
    read_flickr30k_cna,
    FLICKR_CNA_LAYOUT,
    "short",
    STANDARD,
    lowercase=False,
    groups=("retrieval", "chinese"),
)
for _name, _relative, _what in (
    ("lit-cn", "LIT-CN/image_caption_long_cn.txt", "LIT-CN long Chinese captions"),
    ("dci-cn", "DCI-CN/image_caption_trans.txt", "DCI-CN long Chinese captions"),
    ("docci-cn", "DOCCI-CN/image_caption_trans.txt", "DOCCI-CN long Chinese captions"),
):
    _reader, _layout = tab_file_reader(_name, _relative)
    retrieval_task(
        _name, f"{_what}: R@1", _reader, _layout, "long", (1,), lowercase=False, groups=("retrieval", "chinese", "long")
    )
