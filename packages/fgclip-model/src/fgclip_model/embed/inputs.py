"""What ``embed`` reads: every input kind lists its samples as :class:`Item` rows, through one small registry.

A source is a class with ``name``, ``matches(path) -> bool`` and ``items(path, options) -> list[Item]``
(:class:`Source`); :func:`register_source` adds one (the record store of ``fgclip-data`` plugs in the same way:
its rows become items whose ``image`` is a path under the store's image folder). :func:`list_items` picks the
source by name, or the first whose ``matches`` accepts the path.

Listing reads only small things (folder entries, tar headers, table rows, record JSON); images are decoded later,
in the loader's workers, from :attr:`Item.image`: a file path, or ``(tar path, offset, size)`` of a tar member.
"""

from __future__ import annotations

import csv
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PATH_COLUMNS = ("image_path", "path", "filepath", "file", "image", "f_path", "filename")
CAPTION_COLUMNS = ("caption", "text", "short_caption", "title")


class InputError(ValueError):
    """An input that cannot be read at all (a missing folder, a table without a path column, a malformed record)."""


@dataclass(frozen=True)
class Region:
    """One box of an item: normalised ``x1, y1, x2, y2`` and its referring expression (may be empty)."""

    box: tuple[float, float, float, float]
    caption: str = ""


@dataclass(frozen=True)
class Item:
    """One sample: a unique ``key``, where its image is (``image``: a path, or ``(tar, offset, size)``; ``None``
    for a text-only row), ``image_path`` for the metadata (the absolute file path; a tar member's name, with the
    tar in the ``shard`` column), an optional caption, boxes, and extra metadata columns."""

    key: str
    image: str | tuple[str, int, int] | None
    image_path: str
    caption: str | None = None
    regions: tuple[Region, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputOptions:
    """``image_root``: where relative image paths of tables and records live (default: the file's folder);
    ``path_column`` / ``caption_column``: table columns (default: the first of :data:`PATH_COLUMNS` /
    :data:`CAPTION_COLUMNS` present); ``caption_field``: FineHARD's ``short_caption`` or ``caption`` (long)."""

    image_root: str | None = None
    path_column: str | None = None
    caption_column: str | None = None
    caption_field: str = "short_caption"


class Source(Protocol):
    name: str

    def matches(self, path: Path) -> bool: ...

    def items(self, path: Path, options: InputOptions) -> list[Item]: ...


SOURCES: dict[str, Source] = {}


def register_source(source_class: type) -> type:
    """Class decorator: add a source to :data:`SOURCES` under its ``name`` (later sources are tried first)."""
    SOURCES[source_class.name] = source_class()
    return source_class


def find_source(path: str | Path, kind: str | None = None) -> Source:
    """The source named ``kind``, or (``None``) the last registered one whose ``matches`` accepts ``path``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if kind is not None:
        if kind not in SOURCES:
            raise InputError(f"unknown input format {kind!r} (known: {', '.join(SOURCES)})")
        return SOURCES[kind]
    for source in reversed(SOURCES.values()):
        if source.matches(path):
            return source
    raise InputError(f"{path}: not a known input (known kinds: {', '.join(SOURCES)}); pass --input-format")


def list_items(path: str | Path, kind: str | None = None, options: InputOptions | None = None) -> list[Item]:
    """The items of ``path`` read by the source ``kind`` (auto-detected when ``None``); keys must be unique."""
    path = Path(path)
    items = find_source(path, kind).items(path, options or InputOptions())
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise InputError(f"{path}: the key {item.key!r} appears twice (keys identify rows and must be unique)")
        seen.add(item.key)
    return items


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _root(path: Path, options: InputOptions) -> Path:
    return Path(options.image_root) if options.image_root else (path if path.is_dir() else path.parent)


@register_source
class FolderSource:
    """An image folder (recursively, sorted); ``name.txt`` beside ``name.jpg`` is its caption."""

    name = "folder"

    def matches(self, path: Path) -> bool:
        return path.is_dir()

    def items(self, path: Path, options: InputOptions) -> list[Item]:
        if not path.is_dir():
            raise InputError(f"{path} is not a folder")
        items = []
        for file in _files(path, IMAGE_SUFFIXES):
            sidecar = file.with_suffix(".txt")
            caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else None
            key = file.relative_to(path).as_posix()
            items.append(Item(key, str(file.resolve()), str(file.resolve()), caption))
        if not items:
            raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return items


@register_source
class TextSource:
    """A text file, one caption per line (blank lines skipped): text embeddings only."""

    name = "text"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".txt"

    def items(self, path: Path, options: InputOptions) -> list[Item]:
        lines = path.read_text(encoding="utf-8").splitlines()
        items = [Item(f"{n:09d}", None, "", line.strip()) for n, line in enumerate(lines) if line.strip()]
        if not items:
            raise InputError(f"{path} holds no text lines")
        return items


@register_source
class WebDatasetSource:
    """WebDataset tars (a ``.tar`` or a folder of them): members grouped by key (the name before the first dot);
    the image member is read later by offset, ``.txt`` is the caption, ``.json`` adds metadata (e.g. ``url``)."""

    name = "webdataset"

    def matches(self, path: Path) -> bool:
        return (path.is_file() and path.suffix == ".tar") or (path.is_dir() and any(path.glob("*.tar")))

    def items(self, path: Path, options: InputOptions) -> list[Item]:
        tars = [path] if path.is_file() else sorted(path.glob("*.tar"))
        if not tars:
            raise InputError(f"{path} holds no .tar shards")
        items = []
        for tar_path in tars:
            items.extend(self._shard(tar_path))
        return items

    @staticmethod
    def _shard(tar_path: Path) -> list[Item]:
        samples: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    stem, _, ext = Path(member.name).name.partition(".")
                    key = str(Path(member.name).parent / stem) if "/" in member.name else stem
                    sample = samples.setdefault(key, {})
                    if "." + ext.lower() in IMAGE_SUFFIXES and "image" not in sample:
                        sample["image"] = (str(tar_path.resolve()), member.offset_data, member.size)
                        sample["name"] = member.name
                    elif ext in ("txt", "json"):
                        sample[ext] = tar.extractfile(member).read().decode("utf-8", errors="replace")
        except (tarfile.TarError, OSError) as err:
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"{tar_path}: not a readable tar ({why})") from err
        items = []
        for key, sample in samples.items():
            if "image" not in sample:
                continue  # a caption-only sample: nothing to embed
            extra: dict[str, Any] = {"shard": str(tar_path.resolve())}
            if "json" in sample:
                try:
                    meta = json.loads(sample["json"])
                except json.JSONDecodeError:
                    meta = {}
                if isinstance(meta, dict):
                    extra.update({k: _cell(v) for k, v in meta.items() if k not in ("key", "caption", "image_path")})
            caption = sample["txt"].strip() if "txt" in sample else None
            items.append(Item(f"{tar_path.stem}/{key}", sample["image"], sample["name"], caption, (), extra))
        return items


def _cell(value: Any) -> Any:
    """A metadata value as a parquet-friendly scalar (nested values as JSON text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)


def _read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from fgclip_model.embed.writer import arrow

        return arrow()[1].read_table(path).to_pylist()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{n}: not a JSON line ({err.msg})") from err
            if not isinstance(rows[-1], dict):
                raise InputError(f"{path}:{n}: a JSON line must be an object")
    return rows


def _column(path: Path, rows: list[dict], wanted: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    columns = list(rows[0]) if rows else []
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{path}: no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    found = [c for c in candidates if c in columns]
    if not found and what == "path":
        raise InputError(f"{path}: no image path column (looked for {', '.join(candidates)}); pass --path-column")
    return found[0] if found else None


@register_source
class TableSource:
    """A table of image paths: CSV, TSV, Parquet or JSON Lines; relative paths resolve against ``image_root``
    (default: the table's folder); other columns are kept as metadata."""

    name = "table"
    suffixes = (".csv", ".tsv", ".parquet", ".jsonl")

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.suffixes

    def items(self, path: Path, options: InputOptions) -> list[Item]:
        rows = _read_table(path)
        if not rows:
            raise InputError(f"{path} has no rows")
        path_col = _column(path, rows, options.path_column, PATH_COLUMNS, "path")
        caption_col = _column(path, rows, options.caption_column, CAPTION_COLUMNS, "caption")
        root = _root(path, options)
        items = []
        for n, row in enumerate(rows):
            value = row.get(path_col)
            if not isinstance(value, str) or not value:
                raise InputError(f"{path}: row {n}: {path_col!r} is not a path ({value!r})")
            caption = row.get(caption_col) if caption_col else None
            extra = {k: _cell(v) for k, v in row.items() if k not in (path_col, caption_col, "key")}
            image = str((root / value).resolve())
            items.append(Item(value, image, image, None if caption is None else str(caption), (), extra))
        return items


def _finehard_records(path: Path) -> list[tuple[str, int, Any]]:
    """(file, index, raw record) of a FineHARD ``.json`` array or ``.jsonl`` file, or a folder of them."""
    files = _files(path, (".json", ".jsonl"))
    out = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() == ".json" and text.lstrip().startswith("["):
            try:
                records = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from err
            out.extend((str(file), n, r) for n, r in enumerate(records))
            continue
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    out.append((str(file), n, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise InputError(f"{file}: record {n}: not valid JSON ({err.msg})") from err
    return out


def _finehard_boxes(file: str, n: int, record: dict) -> tuple[Region, ...]:
    regions = []
    for k, info in enumerate(record.get("bbox_info") or []):
        box = info.get("bbox") if isinstance(info, dict) else None
        if not isinstance(box, list) or len(box) < 4 or not all(isinstance(v, (int, float)) for v in box[:4]):
            raise InputError(f"{file}: record {n}: bbox_info.{k}.bbox is not [x1, y1, x2, y2] ({box!r})")
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
            raise InputError(f"{file}: record {n}: bbox_info.{k}.bbox {box[:4]} is not a normalised x1 ≤ x2, y1 ≤ y2")
        regions.append(Region((x1, y1, x2, y2), str(info.get("short_expr") or "")))
    return tuple(regions)


@register_source
class FineHARDSource:
    """FineHARD records (``.json`` arrays or ``.jsonl``, or a folder of them): ``f_path`` under ``image_root``,
    the short (or long) caption, and the boxes of ``bbox_info`` for region embeddings."""

    name = "finehard"

    def matches(self, path: Path) -> bool:
        if path.is_file() and path.suffix.lower() not in (".json", ".jsonl"):
            return False
        files = _files(path, (".json", ".jsonl")) if path.exists() else []
        if not files or (path.is_dir() and any(path.glob("*.tar"))):
            return False
        with files[0].open(encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        return '"f_path"' in head

    def items(self, path: Path, options: InputOptions) -> list[Item]:
        root = _root(path, options)
        items = []
        for file, n, record in _finehard_records(path):
            if not isinstance(record, dict) or not isinstance(record.get("f_path"), str):
                raise InputError(f"{file}: record {n}: f_path is missing or not a string")
            caption = record.get(options.caption_field)
            regions = _finehard_boxes(file, n, record)
            f_path = record["f_path"]
            image = str((root / f_path).resolve())
            items.append(Item(f_path, image, image, None if caption is None else str(caption), regions))
        if not items:
            raise InputError(f"{path} holds no FineHARD records")
        return items
