"""``benchmark-data``: put downloaded benchmark files into the layouts the tasks read.

* ``imagenet``: ImageNet-1k's validation archive as the Hugging Face ``ILSVRC/imagenet-1k`` repository ships it
  (``data/val_images.tar.gz``, flat files named ``ILSVRC2012_val_<n>_<wnid>.JPEG``) -> one folder per synset,
  ``<data-root>/imagenet/data/val_images/<wnid>/``. Also takes the extracted flat folder.
* ``flickr30k``: the Karpathy split file (``dataset_flickr30k.json``, which the Flickr30k downloads come with) ->
  ``<data-root>/flickr30k/flickr30k_test.json``, the 1k test split as ``[{image, caption: [5]}]``.
* ``download NAME``: the torchvision sets (and CIFAR, Flowers-102) fetched by torchvision itself, explicitly.

Nothing is deleted or overwritten: sources stay as they are, a file already in place with the same content is
counted as done (so a rerun resumes), and a different file in the way is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .tasks.classification import TORCHVISION_SETS

SYNSET_FILE = re.compile(r"^(?P<stem>.+)_(?P<wnid>n\d{8})\.(?P<ext>jpe?g|JPE?G|png|PNG)$")


class PrepareError(ValueError):
    """A source is missing or malformed, or a different file is in the way; the message names it."""


@dataclass
class Report:
    """What a preparation step did: files written, files already in place, and skips grouped by reason."""

    written: int = 0
    present: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def line(self, what: str) -> str:
        parts = [f"{self.written} written", f"{self.present} already in place"]
        if self.skipped:
            parts.append("skipped: " + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common()))
        return f"{what}: " + ", ".join(parts + self.notes)


def _write_new(target: Path, data: bytes, report: Report) -> None:
    """Write ``data`` to ``target`` atomically unless the same bytes are already there; refuse a different file."""
    if target.exists():
        if target.read_bytes() != data:
            raise PrepareError(f"{target} exists with other content; move it away (nothing is overwritten)")
        report.present += 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    report.written += 1


def _val_files(source: Path):
    """(file name, reader of its bytes) for every file of the flat folder or the tar archive, streamed."""
    if source.is_dir():
        for path in sorted(p for p in source.iterdir() if p.is_file()):
            yield path.name, path.read_bytes
        return
    try:
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    yield Path(member.name).name, archive.extractfile(member).read
    except (tarfile.TarError, OSError, EOFError) as err:
        raise PrepareError(f"{source} is not a readable (complete) tar archive ({err})") from err


def organize_imagenet(source: Path, data_root: Path, progress: bool = True) -> Report:
    """ImageNet-1k val (archive or flat folder of ``*_<wnid>.JPEG``) -> ``imagenet/data/val_images/<wnid>/``."""
    from tqdm.auto import tqdm

    out = data_root / "imagenet" / "data" / "val_images"
    report = Report()
    if not source.exists():
        raise PrepareError(f"{source} does not exist (expected val_images.tar.gz or its extracted folder)")
    items = _val_files(source)
    for name, read in tqdm(items, total=50_000, desc="imagenet", unit="image", disable=not progress):
        match = SYNSET_FILE.match(name)
        if match is None:
            report.skipped["not named <file>_<wnid>.JPEG"] += 1
            continue
        _write_new(out / match["wnid"] / name, read(), report)
    synsets = len([p for p in out.iterdir() if p.is_dir()]) if out.is_dir() else 0
    if synsets != 1000:
        report.notes.append(f"incomplete: {synsets} of 1000 synset folders")
    return report


def flickr30k_from_karpathy(karpathy: Path, data_root: Path) -> Report:
    """Karpathy's ``dataset_flickr30k.json`` -> ``flickr30k/flickr30k_test.json`` (1000 test images x 5 captions)."""
    try:
        data = json.loads(karpathy.read_text(encoding="utf-8"))
        images = data["images"]
        test = [
            {"image": f"flickr30k-images/{im['filename']}", "caption": [s["raw"] for s in im["sentences"][:5]]}
            for im in images
            if im.get("split") == "test"
        ]
    except FileNotFoundError as err:
        raise PrepareError(f"{karpathy} does not exist (expected Karpathy's dataset_flickr30k.json)") from err
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise PrepareError(
            f"{karpathy}: not a Karpathy split file ({{images: [{{filename, split, sentences: [{{raw}}]}}]}}): {err!r}"
        ) from err
    if not test:
        raise PrepareError(f"{karpathy}: no image has split 'test'")
    report = Report()
    short = sum(len(r["caption"]) < 5 for r in test)
    if short:
        report.notes.append(f"{short} test images with fewer than 5 captions")
    _write_new(data_root / "flickr30k" / "flickr30k_test.json", json.dumps(test, ensure_ascii=False).encode(), report)
    return report


# name -> (torchvision class, constructor keywords): the classification tasks' sets, with CIFAR and Flowers-102
# (read by readers of their own there, but downloaded by torchvision like the others)
DOWNLOADS: dict[str, tuple[str, dict]] = {
    "cifar10": ("CIFAR10", {"train": False}),
    "cifar100": ("CIFAR100", {"train": False}),
    "flowers": ("Flowers102", {"split": "test"}),
    **{name: (cls, kwargs) for name, (cls, kwargs, _, _) in TORCHVISION_SETS.items()},
}


def download(name: str, data_root: Path) -> None:
    """Fetch one torchvision set into ``data_root`` with torchvision's own downloader (``download=True``)."""
    import torchvision.datasets

    if name not in DOWNLOADS:
        raise PrepareError(f"unknown set {name!r} (one of {', '.join(DOWNLOADS)})")
    class_name, kwargs = DOWNLOADS[name]
    data_root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(torchvision.datasets, class_name)(str(data_root), download=True, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError on bad files
        raise PrepareError(f"{name}: torchvision could not download {class_name} into {data_root}: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="the benchmark data root (default: data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    steps = parser.add_subparsers(dest="step", required=True)
    imagenet = steps.add_parser("imagenet", help="ImageNet-1k val_images.tar.gz -> one folder per synset")
    imagenet.add_argument("source", type=Path, help="val_images.tar.gz (or the folder it extracts to)")
    flickr = steps.add_parser("flickr30k", help="Karpathy's dataset_flickr30k.json -> flickr30k_test.json")
    flickr.add_argument("karpathy", type=Path, help="dataset_flickr30k.json")
    fetch = steps.add_parser("download", help="fetch torchvision sets with torchvision's downloader")
    fetch.add_argument("names", nargs="+", choices=sorted(DOWNLOADS), metavar="NAME", help=", ".join(DOWNLOADS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.step == "imagenet":
            print(organize_imagenet(args.source, args.data_root, progress=not args.quiet).line("imagenet"))
        elif args.step == "flickr30k":
            print(flickr30k_from_karpathy(args.karpathy, args.data_root).line("flickr30k"))
        else:
            for name in args.names:
                download(name, args.data_root)
                print(f"{name}: in {args.data_root}")
    except PrepareError as err:
        print(f"benchmark-data: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
