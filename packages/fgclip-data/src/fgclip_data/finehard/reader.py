"""Streaming reader of FineHARD record files: JSON arrays (``jsonfiles/*.json``) and JSON Lines.

Arrays are parsed incrementally (``jsonarray``), so a 12M-record corpus never has to sit in memory as Python objects
unless the caller asks for a list (:func:`read_records`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fgclip_data.finehard.jsonarray import array_elements
from fgclip_data.report import DataError, Report
from fgclip_data.schema import FineHARDRecord, parse_record


@dataclass(frozen=True)
class RecordRef:
    """A validated record and where it came from."""

    file: str
    index: int
    record: FineHARDRecord


def record_files(path: str | Path) -> list[Path]:
    """The record files behind ``path``: a ``.json`` / ``.jsonl`` file, a ``.txt`` listing one file per line
    (relative to the listing), or a directory (its ``*.json`` and ``*.jsonl``, sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.json"), *path.glob("*.jsonl")])
        if not files:
            raise FileNotFoundError(f"{path} holds no *.json or *.jsonl record files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".txt":
        try:
            listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise DataError("not a text listing of record files (binary content)", str(path)) from err
        files = [p if p.is_absolute() else path.parent / p for p in map(Path, listed)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists record files that do not exist: {', '.join(missing[:3])}")
        return files
    return [path]


def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return chr(stripped[0])
    return ""


def iter_raw(path: Path, report: Report) -> Iterator[tuple[int, object]]:
    """(index, decoded JSON value) of every record in one file; malformed JSON (truncated, binary, not UTF-8) and
    empty files are reported by kind, never fatal unless the report is strict."""
    first = _first_char(path)
    if not first:
        report.problem("empty record file", str(path))
        return
    if first == "[":
        index = -1
        try:
            for index, item in enumerate(array_elements(path)):
                yield index, item
        except ValueError:  # truncated, binary or invalid (JSONDecodeError, UnicodeDecodeError)
            report.problem("malformed JSON array; rest of the file skipped", str(path), index + 1)
        return
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                yield index, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.problem("line is not UTF-8 text (binary file?)", str(path), index)
            except json.JSONDecodeError:
                report.problem("malformed JSON line", str(path), index)


def iter_records(path: str | Path, report: Report | None = None) -> Iterator[RecordRef]:
    """Validated records of every file behind ``path``, streamed. Invalid records are reported and skipped
    (or raise :class:`DataError` naming file, record and field with a strict report)."""
    report = report if report is not None else Report()
    for file in record_files(path):
        for index, raw in iter_raw(file, report):
            record = validate(raw, str(file), index, report)
            if record is not None:
                yield RecordRef(str(file), index, record)


def validate(raw: object, file: str, index: int, report: Report) -> FineHARDRecord | None:
    """The validated record, or None when it is invalid; problems (an invalid record, each dropped box) go to
    ``report`` by kind and a good record counts as ``"records"``."""
    try:
        record = parse_record(raw, file, index)
    except DataError as err:
        report.problem(f"invalid record: {err.reason}", err.file, err.record, err.field)
        return None
    for k, reason in record.dropped_boxes:
        report.problem(f"malformed box dropped ({reason})", file, index, f"bbox_info.{k}.bbox")
    report.count("records")
    return record


def read_records(path: str | Path, report: Report | None = None) -> list[RecordRef]:
    """All records behind ``path`` in memory (for map-style datasets of moderate size)."""
    return list(iter_records(path, report))
