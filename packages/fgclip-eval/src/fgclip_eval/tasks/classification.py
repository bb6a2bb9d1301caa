"""Zero-shot classification: ImageNet-1k, ImageNet-v2 (matched frequency) and ten torchvision sets, with the 80
OpenAI ImageNet prompt templates and prompt ensembling (each prompt normalised, averaged, renormalised).

ImageNet class names and the templates come from ``open_clip.zero_shot_metadata`` (the OpenAI-curated list the
reference scripts carry as copies). The torchvision sets are read with torchvision's own dataset classes, from
the folders their ``download=True`` creates under one data root; class names are the datasets' own, with ``_``
and ``/`` made spaces. Scores and tie-breaking follow each family's
reference scripts (FG-CLIP 2 ranks ``sigmoid(exp(t)·cos + b)``; ImageNet-v2 and Long-CLIP take the first maximum
for top-1); CIFAR keeps its raw class names, as Long-CLIP's CIFAR scripts. Differences from the reference: no
``drop_last`` (every image counts), and the accuracy is global, not a mean of per-batch accuracies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from ..metrics import topk_accuracy
from ..zeroshot import clean, imagenet_classnames, templates, zero_shot_classifier
from . import BadDataset, MissingDataset, Task, first_existing, register, task


def classify(
    encoder,
    images: Sequence,
    labels: torch.Tensor,
    classnames: Sequence[str],
    patches: int | None = None,
    rule: str | None = None,
) -> dict[str, float]:
    """Top-1/5 with the 80-template classifier on the family's reference scores (FG-CLIP 2: sigmoid); ``patches``:
    a fixed NaFlex budget (FG-CLIP 2's ImageNet: 1024); ``rule``: how ties rank (default: the family's)."""
    weights = zero_shot_classifier(encoder, classnames, templates())
    with encoder.fixed_patches(patches) if patches else nullcontext():
        features = encoder.images(images)
    scores = encoder.scores(features @ weights.T)
    top = topk_accuracy(scores, labels, ks=(1, 5), rule=rule or encoder.protocol.classification_rule)
    return {"top1": top[1], "top5": top[5]}


class LazyImages(Sequence):
    """Item ``i`` is image ``i`` of a torchvision dataset, decoded only when read (by a loader worker)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset[index][0]


# -------------------------------------------------------------------------------------------------- ImageNet

IMAGENET_LAYOUT = "imagenet/data/val_images/<wnid>/*.JPEG (or imagenet/val/<wnid>/), 1000 synset folders"
IMAGENET_V2_LAYOUT = "imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg"
IMAGENET_PATCHES = 1024  # FG-CLIP 2's ImageNet protocol: a fixed budget, not each image's dynamic bucket
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@task("imagenet-1k", "ImageNet-1k val zero-shot top-1/5 (80 templates)", IMAGENET_LAYOUT, groups=("classification",))
def imagenet(encoder, data_root: Path) -> dict[str, float]:
    root = first_existing(
        [data_root / "imagenet" / "data" / "val_images", data_root / "imagenet" / "val"], "imagenet-1k", IMAGENET_LAYOUT
    )
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) != 1000:
        raise MissingDataset(
            f"imagenet-1k: {root} holds {len(folders)} class folders, not 1000; expected {IMAGENET_LAYOUT}"
        )
    images, labels = [], []
    for label, folder in enumerate(folders):  # sorted wnids are the standard class order
        files = _image_files(folder)
        images += files
        labels += [label] * len(files)
    return classify(encoder, images, torch.tensor(labels), imagenet_classnames(), patches=IMAGENET_PATCHES)


@task("imagenet-v2", "ImageNet-v2 matched-frequency top-1/5", IMAGENET_V2_LAYOUT, groups=("classification",))
def imagenet_v2(encoder, data_root: Path) -> dict[str, float]:
    root = first_existing([data_root / "imagenetv2-matched-frequency-format-val"], "imagenet-v2", IMAGENET_V2_LAYOUT)
    images, labels = [], []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        files = _image_files(folder)
        images += files
        labels += [int(folder.name)] * len(files)
    if not images:
        raise MissingDataset(f"imagenet-v2: no images under {root}; expected {IMAGENET_V2_LAYOUT}")
    # the reference ImageNet-v2 scripts (all families) take the first maximum for top-1
    return classify(encoder, images, torch.tensor(labels), imagenet_classnames(), IMAGENET_PATCHES, rule="argmax")


# ----------------------------------------------------------------------------------------- torchvision sets

FLOWERS_LAYOUT = (
    "flowers-102/jpg/image_NNNNN.jpg, flowers-102/imagelabels.mat, flowers-102/setid.mat (as torchvision's Flowers102 "
    "downloads them); class names from flowers-102/classnames.txt when present, else the 102 names shipped here"
)
FLOWERS_NAMES = Path(__file__).parents[1] / "data" / "flowers102_classnames.txt"  # torchvision's Flowers102 has none


class Flowers102Test:
    """The Flowers-102 test split read from torchvision's download layout (``tstid`` of setid.mat), with the class
    names of ``classnames.txt`` or the shipped list (label order); a reader of our own because torchvision's checks
    the .mat files' MD5 on every load."""

    def __init__(self, root: Path) -> None:
        from scipy.io import loadmat

        base = root / "flowers-102"
        names = base / "classnames.txt" if (base / "classnames.txt").is_file() else FLOWERS_NAMES
        self.classes = [n.strip() for n in names.read_text(encoding="utf-8").splitlines() if n.strip()]
        if len(self.classes) != 102:
            raise BadDataset(f"{names}: expected 102 class names, found {len(self.classes)}")
        ids = loadmat(first_existing([base / "setid.mat"], "flowers", FLOWERS_LAYOUT), squeeze_me=True)["tstid"]
        labels = loadmat(first_existing([base / "imagelabels.mat"], "flowers", FLOWERS_LAYOUT), squeeze_me=True)
        labels = labels["labels"].reshape(-1) - 1
        self.images = [base / "jpg" / f"image_{int(i):05d}.jpg" for i in ids.reshape(-1)]
        self.labels = [int(labels[int(i) - 1]) for i in ids.reshape(-1)]


@task(
    "flowers",
    "Flowers102 test split zero-shot top-1/5 (80 templates)",
    FLOWERS_LAYOUT,
    groups=("classification", "torchvision"),
)
def flowers(encoder, data_root: Path) -> dict[str, float]:
    first_existing([data_root / "flowers-102" / "jpg"], "flowers", FLOWERS_LAYOUT)
    data = Flowers102Test(data_root)
    return classify(encoder, data.images, torch.tensor(data.labels), [clean(n) for n in data.classes])


CIFAR = {  # name -> (folder, test file, meta file, names key, labels key)
    "cifar10": ("cifar-10-batches-py", "test_batch", "batches.meta", "label_names", "labels"),
    "cifar100": ("cifar-100-python", "test", "meta", "fine_label_names", "fine_labels"),
}


def cifar(name: str) -> Callable:
    """CIFAR-10/100 test split from the python pickles torchvision downloads (read here: torchvision's class checks
    the files' MD5 on every load); the pickles are trusted local files of the user's own download."""
    folder, test, meta, names_key, labels_key = CIFAR[name]
    layout = f"<data-root>/{folder}/{{{test},{meta}}} (the python version, as torchvision downloads it)"

    def run(encoder, data_root: Path) -> dict[str, float]:
        import pickle

        from PIL import Image

        base = first_existing([data_root / folder], name, layout)
        with open(first_existing([base / test], name, layout), "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        with open(first_existing([base / meta], name, layout), "rb") as f:
            names = pickle.load(f, encoding="latin1")[names_key]
        pixels = batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        images = [Image.fromarray(p) for p in pixels]
        # raw class names (CIFAR-100's "maple_tree"), as Long-CLIP's CIFAR scripts, the protocol's only reference
        return classify(encoder, images, torch.tensor(batch[labels_key]), list(names))

    return run, layout


def _labels(dataset) -> list[int]:
    for attribute in ("targets", "_labels", "y"):
        if hasattr(dataset, attribute):
            return list(getattr(dataset, attribute))
    if hasattr(dataset, "_samples"):  # StanfordCars
        return [label for _, label in dataset._samples]
    return [dataset[i][1] for i in range(len(dataset))]


# name -> (torchvision class, constructor keywords, the folder it creates under the root, class-name getter)
TORCHVISION_SETS: dict[str, tuple[str, dict, str, Callable]] = {
    "food101": ("Food101", {"split": "test"}, "food-101", lambda root, d: d.classes),
    "sun397": ("SUN397", {}, "SUN397", lambda root, d: d.classes),
    "stanford_car": ("StanfordCars", {"split": "test"}, "stanford_cars", lambda root, d: d.classes),
    "aircraft": ("FGVCAircraft", {"split": "test"}, "fgvc-aircraft-2013b", lambda root, d: d.classes),
    "dtd": ("DTD", {"split": "test"}, "dtd", lambda root, d: d.classes),
    "pets": ("OxfordIIITPet", {"split": "test"}, "oxford-iiit-pet", lambda root, d: d.classes),
    "caltech101": ("Caltech101", {}, "caltech101", lambda root, d: d.categories),
}


def torchvision_task(name: str) -> Callable:
    class_name, kwargs, folder, classnames = TORCHVISION_SETS[name]

    def run(encoder, data_root: Path) -> dict[str, float]:
        import torchvision.datasets

        layout = f"torchvision's {class_name} files under <data-root>/{folder} (as download=True leaves them)"
        first_existing([data_root / folder], name, layout)
        try:
            dataset = getattr(torchvision.datasets, class_name)(str(data_root), download=False, **kwargs)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise MissingDataset(f"{name}: {err} (looked in {data_root / folder}; expected {layout})") from err
        names = [clean(n) for n in classnames(data_root, dataset)]
        return classify(encoder, LazyImages(dataset), torch.tensor(_labels(dataset)), names)

    return run


for _name, (_class, _kwargs, _folder, _) in TORCHVISION_SETS.items():
    register(
        Task(
            _name,
            f"{_class} test split zero-shot top-1/5 (80 templates)",
            f"<data-root>/{_folder} (torchvision {_class})",
            torchvision_task(_name),
            ("classification", "torchvision"),
        )
    )
for _name in CIFAR:
    _run, _layout = cifar(_name)
    register(
        Task(
            _name,
            f"{_name.upper()} test split zero-shot top-1/5 (80 templates)",
            _layout,
            _run,
            ("classification", "torchvision"),
        )
    )
