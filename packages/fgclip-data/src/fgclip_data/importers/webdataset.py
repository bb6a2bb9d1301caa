"""WebDataset tars as img2dataset writes them: per sample ``<key>.jpg`` (or png / webp), ``<key>.txt`` (the
caption) and ``<key>.json`` (img2dataset's metadata; it may also hold ``caption`` and ``boxes`` as the folder
source's sidecar JSON). Images are extracted into the output's image folder as ``<tar stem>/<key>.jpg``.
Samples without an image (img2dataset's failed downloads) are counted skips. img2dataset records the size it
downloaded (``original_width`` / ``original_height``): pixel boxes are converted only when the stored image still has
that size (a resized image makes them uncertain: refused and counted).
"""

from __future__ import annotations

import argparse
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fgclip_data.importers.base import Candidate, Source, register_source
from fgclip_data.importers.folder import sidecar_candidate
from fgclip_data.report import DataError, Report

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _split(name: str) -> tuple[str, str]:
    """WebDataset's key / extension split: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


@register_source
class WebDatasetSource(Source):
    """``fgclip-data import webdataset SHARDS_DIR_OR_TARS...``."""

    name = "webdataset"
    help = "WebDataset tars as img2dataset writes them (jpg + txt + json)"

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("shards", type=Path, nargs="+", help="tar files, or folders holding *.tar")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WebDatasetSource:
        return cls(args.shards)

    def identity(self) -> dict:
        return {"shards": [str(p.resolve()) for p in self.paths]}

    def tars(self) -> list[Path]:
        found: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                found += sorted(path.glob("*.tar"))
            elif path.is_file():
                found.append(path)
            else:
                raise DataError("not found", str(path))
        if not found:
            raise DataError("no .tar shards found", ", ".join(map(str, self.paths)))
        return found

    def scan(self, report: Report) -> list[tuple[str, str]]:
        items = []
        self._members: dict[tuple[str, str], dict[str, str]] = {}
        for tar in self.tars():
            try:
                with tarfile.open(tar) as archive:
                    names = [m.name for m in archive.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError, EOFError) as err:
                raise DataError(f"is not a readable tar file ({type(err).__name__})", str(tar)) from err
            samples: dict[str, dict[str, str]] = {}
            for name in names:
                key, ext = _split(name)
                samples.setdefault(key, {})[ext] = name
            for key in sorted(samples):
                items.append((str(tar), key))
                self._members[(str(tar), key)] = samples[key]
        return items

    def item_key(self, item: tuple[str, str]) -> str:
        return f"{Path(item[0]).name.removesuffix('.tar')}/{item[1]}"

    def load(self, items: Sequence[tuple[str, str]], report: Report) -> Iterator[Candidate | None]:
        archive, open_tar = None, None
        try:
            for item in items:
                tar = item[0]
                if tar != open_tar:
                    if archive:
                        archive.close()
                    archive, open_tar = tarfile.open(tar), tar  # noqa: SIM115 (one tar open across items)
                yield self._candidate(archive, item, report)
        finally:
            if archive:
                archive.close()

    def _candidate(self, archive: tarfile.TarFile, item: tuple[str, str], report: Report) -> Candidate | None:
        tar, key = item
        members = self._members[item]
        where = f"{tar}, sample {key}"
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None:
            report.problem("sample without an image (failed download?)", where)
            return None

        def read(ext: str) -> bytes | None:
            try:
                f = archive.extractfile(members[ext])
                return f.read() if f else None
            except (tarfile.TarError, OSError, EOFError):
                return None

        image = read(image_ext)
        if image is None:
            report.problem("unreadable image member (truncated tar?)", where)
            return None
        text = None
        if "txt" in members:
            raw = read("txt") or b""
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                report.problem("caption member is not UTF-8 text", where, field="txt")
                return None
        meta = None
        if "json" in members:
            try:
                meta = json.loads((read("json") or b"").decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                report.problem("json member is not valid JSON; ignored", where, field="json")
            meta = meta if isinstance(meta, dict) else None
        if text is None and meta and isinstance(meta.get("caption"), str):
            text = meta["caption"]
        if text is None:
            report.problem("sample without a caption (txt)", where)
            return None
        original = (meta or {}).get("original_width"), (meta or {}).get("original_height")
        meta = {k: v for k, v in (meta or {}).items() if k in ("boxes", "box_unit", "short_caption")}
        candidate = sidecar_candidate(self.item_key(item), image, "." + image_ext, text, meta, where, report)
        if all(isinstance(v, int) and v > 0 for v in original):
            # img2dataset may have resized the image: pixel boxes are certain only at the size it was downloaded
            candidate.size = (original[0], original[1])
        return candidate
