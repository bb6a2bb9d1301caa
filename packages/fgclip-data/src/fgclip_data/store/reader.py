"""Zero-copy access to record ``i`` of a store: its parts memory-mapped, its columns read straight from the Arrow
buffers (no per-record Python objects are kept; the pages belong to the page cache and are shared by every
process of the node that maps the same files).

The mapping is opened on first use in each process (:meth:`StoreReader.record` after a fork opens its own), so
a dataset handed to forked loader workers carries no open state.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from fgclip_data.finehard.reader import RecordRef
from fgclip_data.schema import BoxInfo, FineHARDRecord, hard_negatives
from fgclip_data.store.manifest import Manifest, StoreError
from fgclip_data.store.schema import BOX_INTS, SCHEMA, default_keys


def _view(buffer: pa.Buffer, code: str, start: int, count: int) -> memoryview:
    """``count`` items of format ``code`` ('i' int32, 'q' int64, 'd' float64) of a buffer from item ``start``:
    indexing it gives Python numbers directly (faster than numpy scalars for one record at a time)."""
    size = memoryview(b"").cast("B").cast(code).itemsize
    return memoryview(buffer).cast("B")[start * size : (start + count) * size].cast(code)


class _Strings:
    """A string column: int32 offsets and the UTF-8 bytes."""

    __slots__ = ("data", "offsets")

    def __init__(self, array: pa.Array) -> None:
        _, offsets, data = array.buffers()[:3]
        self.offsets = _view(offsets, "i", array.offset, len(array) + 1)
        self.data = memoryview(data) if data is not None else memoryview(b"")

    def get(self, i: int) -> str:
        offsets = self.offsets
        return str(self.data[offsets[i] : offsets[i + 1]], "utf-8")

    def range(self, i: int, j: int) -> list[str]:
        """Strings ``i`` to ``j - 1``: one decode of their bytes when they are ASCII (then byte and character
        offsets agree), else one decode each."""
        offsets = self.offsets[i : j + 1].tolist()
        base = offsets[0]
        chunk = self.data[base : offsets[-1]]
        try:
            text = str(chunk, "ascii")
        except UnicodeDecodeError:
            return [str(chunk[a - base : b - base], "utf-8") for a, b in pairwise(offsets)]
        return [text[a - base : b - base] for a, b in pairwise(offsets)]


def _values(array: pa.Array, code: str) -> memoryview:
    """A fixed-width column as a view of its buffer (``to_numpy`` would first set up pyarrow's pandas interop:
    ~26 MB in every process)."""
    return _view(array.buffers()[1], code, array.offset, len(array))


def _offsets(array: pa.Array) -> memoryview:
    return _view(array.buffers()[1], "i", array.offset, len(array) + 1)


# A BoxInfo / FineHARDRecord of values validated when the store was built is set as pydantic's model_construct
# sets it (every field given, no extras; the record's private _dropped_boxes empty: a stored record drops no more
# boxes), without its per-call bookkeeping.
_set, _new = object.__setattr__, object.__new__
_RECORD_FIELDS = frozenset(FineHARDRecord.model_fields)
_BOX_FIELDS = frozenset(BoxInfo.model_fields)


def _record(values: dict) -> FineHARDRecord:
    record = _new(FineHARDRecord)
    _set(record, "__dict__", values)
    _set(record, "__pydantic_fields_set__", set(_RECORD_FIELDS))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", {"_dropped_boxes": []})
    return record


class _Batch:
    """Views of one record batch's buffers, and the record of one of its rows."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        if any(column.offset for column in batch.columns):
            raise StoreError("store record batch with sliced columns (not written by fgclip-data)")
        self.file = _values(batch.column("file"), "i")
        self.index = _values(batch.column("index"), "q")
        self.f_path = _Strings(batch.column("f_path"))
        self.caption = _Strings(batch.column("caption"))
        self.short_caption = _Strings(batch.column("short_caption"))
        self.is_cn = _Strings(batch.column("is_cn"))
        coords, ints, texts = batch.column("box_coords"), batch.column("box_ints"), batch.column("box_texts")
        self.coords_offsets, self.coords = _offsets(coords), _values(coords.values, "d")
        self.ints_offsets, self.ints = _offsets(ints), _values(ints.values, "q")
        self.texts_offsets, self.texts = _offsets(texts), _Strings(texts.values)

    def unpack(self, row: int) -> list[tuple]:
        """(bbox, short_expr, long_expr, flag_short_neg, negatives' texts or None, their keys or None for
        FineHARD's "0".."n-1") of each box of row ``row``."""
        first, last = self.ints_offsets[row], self.ints_offsets[row + 1]
        if first == last:
            return []
        ints = self.ints[first:last].tolist()
        coords = self.coords[self.coords_offsets[row] : self.coords_offsets[row + 1]].tolist()
        texts = self.texts.range(self.texts_offsets[row], self.texts_offsets[row + 1])
        out, c, t = [], 0, 0
        for k in range(0, last - first, BOX_INTS):
            flag, count, named = ints[k], ints[k + 1], ints[k + 2]
            n = int(coords[c])
            bbox, c = coords[c + 1 : c + 1 + n], c + 1 + n
            short, long, t = texts[t], texts[t + 1], t + 2
            values = keys = None
            if count >= 0:
                values, t = texts[t : t + count], t + count
                if named:
                    keys, t = texts[t : t + count], t + count
            out.append((bbox, short, long, flag, values, keys))
        return out

    def boxes(self, row: int) -> list[BoxInfo]:
        out = []
        for bbox, short, long, flag, values, keys in self.unpack(row):
            mapping = None if values is None else dict(zip(keys or default_keys(len(values)), values, strict=True))
            box = _new(BoxInfo)
            _set(box, "__dict__", {
                "bbox": bbox,
                "short_expr": short,
                "long_expr": long,
                "flag_short_neg": flag,
                "short_expr_negs": mapping,
            })  # fmt: skip
            _set(box, "__pydantic_fields_set__", set(_BOX_FIELDS))
            _set(box, "__pydantic_extra__", None)
            _set(box, "__pydantic_private__", None)
            out.append(box)
        return out

    def texts_of(self, row: int) -> tuple[str, str, str, str]:
        """f_path, caption, short_caption and the JSON text of is_cn ("" when the record has none)."""
        offsets = self.is_cn.offsets
        is_cn = self.is_cn.get(row) if offsets[row] != offsets[row + 1] else ""
        return self.f_path.get(row), self.caption.get(row), self.short_caption.get(row), is_cn

    def record(self, row: int) -> FineHARDRecord:
        f_path, caption, short_caption, is_cn = self.texts_of(row)
        return _record(
            {
                "f_path": f_path,
                "caption": caption,
                "short_caption": short_caption,
                "bbox_info": self.boxes(row),
                "is_cn": json.loads(is_cn) if is_cn else None,
            }
        )

    def view(self, row: int) -> StoredRecord:
        f_path, caption, short_caption, is_cn = self.texts_of(row)
        boxes = [
            StoredBox(bbox, short, long, flag, hard_negatives(flag, values or []))
            for bbox, short, long, flag, values, _ in self.unpack(row)
        ]
        return StoredRecord(f_path, caption, short_caption, boxes, bool(is_cn))


class StoredBox:
    """What a sample is built from of a stored box: the fields of :class:`~fgclip_data.schema.BoxInfo` that
    :func:`~fgclip_data.finehard.samples.build_sample` reads (``negatives`` as its property gives them), without
    the model object (record -> sample is the hot path of random access)."""

    __slots__ = ("bbox", "flag_short_neg", "long_expr", "negatives", "short_expr")

    def __init__(self, bbox: list, short_expr: str, long_expr: str, flag_short_neg: int, negatives: list) -> None:
        self.bbox, self.short_expr, self.long_expr = bbox, short_expr, long_expr
        self.flag_short_neg, self.negatives = flag_short_neg, negatives


class StoredRecord:
    """What a sample is built from of a stored record (:class:`~fgclip_data.schema.FineHARDRecord`'s fields that
    :func:`~fgclip_data.finehard.samples.build_sample` reads)."""

    __slots__ = ("bbox_info", "caption", "chinese", "f_path", "short_caption")

    def __init__(self, f_path: str, caption: str, short_caption: str, bbox_info: list, chinese: bool) -> None:
        self.f_path, self.caption, self.short_caption = f_path, caption, short_caption
        self.bbox_info, self.chinese = bbox_info, chinese


class StoreReader:
    """Record ``i`` of a store as a :class:`~fgclip_data.finehard.reader.RecordRef` (the validated record, its
    source file and index there). Checks the manifest at construction (one-line :class:`StoreError` for a
    foreign, incomplete or other-version store); maps the parts on first access in each process."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        if not self.manifest.complete:
            raise StoreError(
                f"{self.folder}: the build was interrupted after {len(self.manifest.parts)} parts; "
                "rerun `fgclip-data store build` with the same sources to finish it"
            )
        self.files = [f.path for f in self.manifest.files]
        self.rows = self.manifest.rows
        self._pid: int | None = None
        self._starts: list[int] = []
        self._batches: list = []

    def __len__(self) -> int:
        return self.rows

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_starts": [], "_batches": []}

    def open(self) -> StoreReader:
        """Map every part (checked against the manifest: size, schema, rows); batches are viewed lazily."""
        starts, batches, total = [], [], 0
        for part in self.manifest.parts:
            path = self.folder / part.name
            if not path.is_file():
                raise StoreError(f"{path}: missing store part")
            if path.stat().st_size != part.bytes:
                raise StoreError(
                    f"{path}: {path.stat().st_size} bytes, the manifest says {part.bytes}: truncated or replaced; "
                    "rebuild the store"
                )
            try:
                reader = ipc.open_file(pa.memory_map(str(path)))
            except (pa.ArrowInvalid, OSError) as err:
                raise StoreError(f"{path}: not a readable Arrow IPC file ({err})") from err
            if not reader.schema.equals(SCHEMA):
                raise StoreError(f"{path}: not a FineHARD record part (foreign Arrow schema)")
            rows = 0
            for i in range(reader.num_record_batches):
                starts.append(total + rows)
                batches.append((reader, i))
                rows += reader.get_batch(i).num_rows
            if rows != part.rows:
                raise StoreError(f"{path}: {rows} rows, the manifest says {part.rows}")
            total += rows
        self._starts, self._batches, self._pid = starts, batches, os.getpid()
        return self

    def _batch(self, b: int) -> _Batch:
        batch = self._batches[b]
        if isinstance(batch, tuple):
            reader, i = batch
            batch = self._batches[b] = _Batch(reader.get_batch(i))
        return batch

    def locate(self, i: int) -> tuple[_Batch, int]:
        if self._pid != os.getpid():
            self.open()
        if not 0 <= i < self.rows:
            raise IndexError(f"record {i} of a store of {self.rows}")
        b = bisect_right(self._starts, i) - 1
        return self._batch(b), i - self._starts[b]

    def record(self, i: int) -> RecordRef:
        batch, row = self.locate(i)
        return RecordRef(self.files[batch.file[row]], batch.index[row], batch.record(row))

    def view(self, i: int) -> RecordRef:
        """Record ``i`` as what samples are built from (a :class:`StoredRecord`, not the validated model: cheaper
        to make, the same sample)."""
        batch, row = self.locate(i)
        return RecordRef(self.files[batch.file[row]], batch.index[row], batch.view(row))

    def __iter__(self) -> Iterator[RecordRef]:
        """Every record in store order (e.g. to build a tokenizer's vocabulary)."""
        return (self.record(i) for i in range(len(self)))

    def column(self, name: str) -> np.ndarray:
        """A whole top-level numeric column (``file`` or ``index``) as one array (a copy: 4-8 bytes a row)."""
        if self._pid != os.getpid():
            self.open()
        columns = [np.asarray(getattr(self._batch(b), name)) for b in range(len(self._batches))]
        return np.concatenate(columns) if columns else np.zeros(0)

    def chinese(self) -> np.ndarray:
        """Whether each row is a Chinese record (``is_cn`` present), from the offsets alone (1 byte a row)."""
        if self._pid != os.getpid():
            self.open()
        parts = [np.diff(np.asarray(self._batch(b).is_cn.offsets)) > 0 for b in range(len(self._batches))]
        return np.concatenate(parts) if parts else np.zeros(0, bool)
