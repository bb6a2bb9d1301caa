"""Tables of image paths and captions: CSV, TSV, JSON Lines, Parquet (open_clip's ``--csv-img-key`` /
``--csv-caption-key`` convention), and transformers' ``imagefolder`` layout (``metadata.jsonl`` /
``metadata.csv`` with a ``file_name`` column, in the folder or in its split sub-folders).

Rows naming the same image are one record with several captions (a table with one row per caption, as COCO
converted to CSV). A caption cell may also be a list (JSON Lines, Parquet). A boxes column holds the box list of
:func:`~fgclip_data.importers.base.regions_from_json` (as JSON text in CSV); a negatives list inside each box
supplies hard negatives made elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from fgclip_data.importers.base import Candidate, Region, Source, box_categories, regions_from_json, register_source
from fgclip_data.report import DataError, Report

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}


def _read_csv(path: Path, separator: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
            sample = f.read(4096)
            if "\x00" in sample:
                raise DataError("is not a text table (binary content)", str(path))
            f.seek(0)
            return list(csv.DictReader(f, delimiter=separator))
    except UnicodeDecodeError as err:
        raise DataError("is not a UTF-8 text table (binary file?)", str(path)) from err
    except csv.Error as err:
        raise DataError(f"is not a valid CSV/TSV table ({err})", str(path)) from err


def _read_jsonl(path: Path, report: Report) -> list[dict]:
    rows: list[dict] = []
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                value = None
            if isinstance(value, dict):
                rows.append(value)
                continue
            if not rows:  # the first line already is not a JSON object: not JSON Lines at all
                raise DataError("is not JSON Lines (a line is not a JSON object)", str(path), index)
            report.problem("malformed JSON line skipped", str(path), index)
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # a dependency of fgclip-data (the record store's format)

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError kinds for non-Parquet files
        raise DataError(f"is not a Parquet file ({type(err).__name__})", str(path)) from err


def read_table(path: Path, fmt: str | None, separator: str | None, report: Report) -> list[dict]:
    """Rows of a CSV / TSV / JSONL / Parquet file as dicts (format from the suffix unless given)."""
    if not path.is_file():
        raise DataError("table not found", str(path))
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"unknown table format (suffix {path.suffix!r}); pass --format csv|tsv|jsonl|parquet", str(path)
        )
    if fmt in ("csv", "tsv"):
        return _read_csv(path, separator or ("\t" if fmt == "tsv" else ","))
    if fmt == "jsonl":
        return _read_jsonl(path, report)
    return _read_parquet(path)


def _require_columns(rows: list[dict], path: Path, columns: dict[str, str | None]) -> None:
    present = set().union(*(r.keys() for r in rows[:100])) if rows else set()
    for option, column in columns.items():
        if column and column not in present:
            raise DataError(
                f"has no column {column!r} ({option}); its columns: {', '.join(sorted(map(str, present))) or 'none'}",
                str(path),
            )


def _key(image: str) -> str:
    path = PurePosixPath(image.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        digest = hashlib.sha1(image.encode()).hexdigest()[:12]
        return f"external/{digest}/{path.stem}"
    return str(path.with_suffix(""))


def _hf_objects(objects, where: str, report: Report) -> list[Region]:
    """transformers' detection column ``objects: {bbox: [[x, y, w, h]], categories: [name]}`` (COCO pixels)."""
    if not isinstance(objects, dict):
        return []
    boxes = objects.get("bbox") or []
    names = objects.get("categories", objects.get("category")) or []
    regions = []
    for k, box in enumerate(boxes):
        name = names[k] if k < len(names) else None
        if not isinstance(name, str):
            report.problem("object category is not a name; box dropped", where, field=f"objects.categories.{k}")
            continue
        regions.append(Region(bbox=box, phrase=name, category=name, fmt="xywh", field=f"objects.bbox.{k}"))
    return regions


class _Rows(Source):
    """Rows grouped by image; subclasses say where the tables are and which columns to read."""

    image_key: str
    caption_key: str
    short_key: str | None = None
    boxes_key: str | None = None

    def tables(self) -> list[tuple[Path, Path]]:
        """(table file, folder its image paths are relative to)."""
        raise NotImplementedError

    def scan(self, report: Report) -> list[str]:
        self._groups: dict[str, list[tuple[Path, int, dict, Path]]] = {}
        self._categories: set[str] = set()
        for path, root in self.tables():
            rows = read_table(path, getattr(self, "fmt", None), getattr(self, "separator", None), report)
            _require_columns(
                [r for r in rows if r],
                path,
                {"image column": self.image_key, "caption column": self.caption_key,
                 "short caption column": self.short_key, "boxes column": self.boxes_key},
            )  # fmt: skip
            prefix = "" if root == self.base else root.relative_to(self.base).as_posix() + "/"
            for index, row in enumerate(rows):
                if not row:
                    continue
                image = row.get(self.image_key)
                if not isinstance(image, str) or not image.strip():
                    report.problem("empty image path; row skipped", str(path), index, self.image_key)
                    continue
                self._groups.setdefault(_key(prefix + image.strip()), []).append((path, index, row, root))
                if self.boxes_key:
                    self._categories |= box_categories(row.get(self.boxes_key))
                elif isinstance(row.get("objects"), dict):
                    names = row["objects"].get("categories") or []
                    self._categories |= {n.strip() for n in names if isinstance(n, str) and n.strip()}
        if not self._groups:
            raise DataError("no rows with an image path", str(self.tables()[0][0]))
        return sorted(self._groups)

    def item_key(self, item: str) -> str:
        return item

    def categories(self) -> list[str]:
        return sorted(getattr(self, "_categories", ()))

    def load(self, items: Sequence[str], report: Report) -> Iterator[Candidate | None]:
        for key in items:
            rows = self._groups[key]
            path, index, first, root = rows[0]
            image = first[self.image_key].strip()
            where = f"{path}, record {index}"
            captions: list[str] = []
            for _, _, row, _ in rows:
                cell = row.get(self.caption_key)
                captions += [c for c in cell if isinstance(c, str)] if isinstance(cell, list) else [cell]
            short = first.get(self.short_key) if self.short_key else None
            regions: list[Region] = []
            if self.boxes_key:
                cell = first.get(self.boxes_key)
                if isinstance(cell, str) and cell.strip():
                    try:
                        cell = json.loads(cell)
                    except json.JSONDecodeError:
                        report.problem("boxes cell is not JSON; boxes ignored", str(path), index, self.boxes_key)
                        cell = None
                regions = regions_from_json(cell or None, where, report, str(path))
            elif "objects" in first:
                regions = _hf_objects(first["objects"], where, report)
            file = Path(image) if Path(image).is_absolute() else root / image
            yield Candidate(
                key=key,
                where=where,
                image=file,
                suffix=file.suffix.lower() or ".jpg",
                captions=[c for c in captions if isinstance(c, str)],
                short_caption=short if isinstance(short, str) else None,
                regions=regions,
                box_unit=getattr(self, "box_unit", "auto"),
            )


@register_source
class TableSource(_Rows):
    """``fgclip-data import table FILE --image-key filepath --caption-key title``."""

    name = "table"
    help = "a CSV / TSV / JSONL / Parquet table of image paths and captions"

    def __init__(self, table: Path, image_key: str = "filepath", caption_key: str = "title",
                 short_key: str | None = None, boxes_key: str | None = None, image_root: Path | None = None,
                 fmt: str | None = None, separator: str | None = None, box_unit: str = "auto") -> None:  # fmt: skip
        self.table, self.image_key, self.caption_key = Path(table), image_key, caption_key
        self.short_key, self.boxes_key, self.fmt, self.separator = short_key, boxes_key, fmt, separator
        self.base = Path(image_root) if image_root else self.table.parent
        self.box_unit = box_unit

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("table", type=Path, help="the table: .csv, .tsv, .jsonl or .parquet")
        parser.add_argument("--image-key", default="filepath", help="image path column (open_clip: filepath)")
        parser.add_argument("--caption-key", default="title", help="caption column (open_clip: title)")
        parser.add_argument("--short-caption-key", default=None, help="short caption column (optional)")
        parser.add_argument("--boxes-key", default=None, help="column with a JSON box list (optional)")
        parser.add_argument("--image-root", type=Path, default=None, help="image paths' root (default: table's folder)")
        parser.add_argument("--format", dest="table_format", choices=["csv", "tsv", "jsonl", "parquet"], default=None)
        parser.add_argument("--separator", default=None, help="CSV field separator (default: ',' / tab for .tsv)")
        parser.add_argument("--box-unit", choices=["auto", "pixel", "normalized"], default="auto")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TableSource:
        return cls(args.table, args.image_key, args.caption_key, args.short_caption_key, args.boxes_key,
                   args.image_root, args.table_format, args.separator, args.box_unit)  # fmt: skip

    def identity(self) -> dict:
        return {"table": str(self.table.resolve()), "image_key": self.image_key, "caption_key": self.caption_key,
                "short_key": self.short_key, "boxes_key": self.boxes_key, "image_root": str(self.base.resolve()),
                "format": self.fmt, "separator": self.separator, "box_unit": self.box_unit}  # fmt: skip

    def tables(self) -> list[tuple[Path, Path]]:
        return [(self.table, self.base)]


@register_source
class ImageFolderSource(_Rows):
    """``fgclip-data import imagefolder DIR``: transformers' ``imagefolder`` with ``metadata.jsonl`` / ``.csv``."""

    name = "imagefolder"
    help = "transformers' imagefolder layout (metadata.jsonl / metadata.csv with file_name)"
    image_key = "file_name"

    def __init__(self, root: Path, caption_key: str = "text", short_key: str | None = None) -> None:
        self.base, self.caption_key, self.short_key = Path(root), caption_key, short_key

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", type=Path, help="the folder (metadata.* in it or in its split sub-folders)")
        parser.add_argument("--caption-key", default="text", help="caption column (default: text)")
        parser.add_argument("--short-caption-key", default=None, help="short caption column (optional)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ImageFolderSource:
        return cls(args.root, args.caption_key, args.short_caption_key)

    def identity(self) -> dict:
        return {"root": str(self.base.resolve()), "caption_key": self.caption_key, "short_key": self.short_key}

    def tables(self) -> list[tuple[Path, Path]]:
        if not self.base.is_dir():
            raise DataError("is not a folder", str(self.base))
        found = []
        for folder in [self.base, *sorted(p for p in self.base.iterdir() if p.is_dir())]:
            for name in ("metadata.jsonl", "metadata.csv", "metadata.parquet"):
                if (folder / name).is_file():
                    found.append((folder / name, folder))
                    break
        if not found:
            raise DataError("holds no metadata.jsonl / metadata.csv (transformers' imagefolder layout)", str(self.base))
        return found
