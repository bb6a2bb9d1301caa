"""The build's record parser: the records and problems of :func:`~fgclip_data.finehard.reader.iter_records`,
at several times its speed.

A record that validates in one pydantic call (``model_validate_json`` on a JSON line, ``model_validate`` on an
element of a JSON array decoded by the C ``json`` scanner) is the record :func:`~fgclip_data.schema.parse_record`
returns for it, with nothing to report; any other record takes the project's own path
(:func:`~fgclip_data.finehard.reader.validate`), which reports it by kind exactly as the JSON readers do.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from fgclip_data.finehard.jsonarray import array_elements
from fgclip_data.finehard.reader import _first_char, validate
from fgclip_data.report import Report
from fgclip_data.schema import FineHARDRecord

_ARRAY_ERROR = "malformed JSON array; rest of the file skipped"


def _fast(record: FineHARDRecord, report: Report) -> FineHARDRecord:
    report.count("records")
    return record


def _lines(path: Path, report: Report, start: int) -> Iterator[tuple[int, FineHARDRecord | None]]:
    file = str(path)
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            if index < start or not raw.strip():
                continue
            if b"\\u" not in raw and b"\\U" not in raw:  # escapes: json and jiter may differ on lone surrogates
                try:
                    yield index, _fast(FineHARDRecord.model_validate_json(raw), report)
                    continue
                except ValidationError:
                    pass
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.problem("line is not UTF-8 text (binary file?)", file, index)
                continue
            except json.JSONDecodeError:
                report.problem("malformed JSON line", file, index)
                continue
            yield index, validate(data, file, index, report)


def _array(path: Path, report: Report, start: int) -> Iterator[tuple[int, FineHARDRecord | None]]:
    file, elements = str(path), array_elements(path)
    for index in itertools.count():
        try:
            data = next(elements)
        except StopIteration:
            return
        except ValueError:  # JSONDecodeError, UnicodeDecodeError: truncated, binary or invalid
            report.problem(_ARRAY_ERROR, file, index)
            return
        if index < start:
            continue
        try:
            yield index, _fast(FineHARDRecord.model_validate(data), report)
        except ValidationError:
            yield index, validate(data, file, index, report)


def parse_file(path: Path, report: Report, start: int = 0) -> Iterator[tuple[int, FineHARDRecord | None]]:
    """(index, validated record or None) of every record of one file from index ``start`` on; problems go to
    ``report`` as :func:`~fgclip_data.finehard.reader.iter_records` reports them (those of records before
    ``start`` excepted: a resumed build counted them before)."""
    first = _first_char(path)
    if not first:
        if start == 0:
            report.problem("empty record file", str(path))
        return
    yield from (_array if first == "[" else _lines)(path, report, start)
