"""The Arrow layout of one validated FineHARD record, and the conversion of a batch of records into it.

A row is a record as :func:`~fgclip_data.schema.parse_record` validated it (malformed boxes already dropped), plus
where it came from: ``file`` (an index into the manifest's source files) and ``index`` (the record's index in
that file), which name the record in reports and key its seeded region-caption draws exactly as the JSON path does.
``f_path``, ``caption`` and ``short_caption`` are columns of their own (what people query); ``is_cn`` holds the
JSON text of the value ("" when the record has none).

A record's boxes are packed into three flat lists, so that reading one record touches a few places of the
memory-mapped file instead of one per field (random access over a store larger than the CPU caches pays for
each place):

- ``box_coords`` (float64): per box, its coordinate count, then the coordinates;
- ``box_ints`` (int64): per box, ``flag_short_neg``, its number of hard negatives (-1: ``short_expr_negs`` is
  null) and 1 when the negatives' keys are stored (0: they are FineHARD's ``"0"`` to ``"n-1"`` in order);
- ``box_texts`` (string): per box, ``short_expr``, ``long_expr``, the negatives' texts, then their keys when stored.

A stored record reads back equal to the validated one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from fgclip_data.schema import FineHARDRecord

SCHEMA = pa.schema(
    [
        ("file", pa.int32()),
        ("index", pa.int64()),
        ("f_path", pa.string()),
        ("caption", pa.string()),
        ("short_caption", pa.string()),
        ("is_cn", pa.string()),
        ("box_coords", pa.list_(pa.float64())),
        ("box_ints", pa.list_(pa.int64())),
        ("box_texts", pa.list_(pa.string())),
    ]
)
BOX_INTS = 3  # box_ints per box: flag_short_neg, the negatives' count (-1: none), whether their keys are stored


NOT_UTF8 = "text that is not UTF-8 (a lone surrogate escape): record skipped"
NOT_INT64 = "flag_short_neg outside the 64-bit integer range: record skipped"
INT64 = (-(1 << 63), (1 << 63) - 1)


def unencodable(record: FineHARDRecord) -> tuple[str, str] | None:
    """(field, reason) of the first value the store cannot hold, or None: text that cannot be stored as UTF-8
    (JSON allows lone ``\\ud800`` escapes; Arrow strings do not), a ``flag_short_neg`` beyond int64 (JSON integers
    have no bound)."""
    texts = [("f_path", record.f_path), ("caption", record.caption), ("short_caption", record.short_caption)]
    for k, box in enumerate(record.bbox_info):
        if not INT64[0] <= box.flag_short_neg <= INT64[1]:
            return f"bbox_info.{k}.flag_short_neg", NOT_INT64
        texts += [(f"bbox_info.{k}.short_expr", box.short_expr), (f"bbox_info.{k}.long_expr", box.long_expr)]
        texts += [(f"bbox_info.{k}.short_expr_negs", t) for t in (box.short_expr_negs or {}).values()]
        texts += [(f"bbox_info.{k}.short_expr_negs", t) for t in (box.short_expr_negs or {})]
    for field, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return field, NOT_UTF8
    return None


_DEFAULT_KEYS: list[tuple[str, ...]] = []


def default_keys(n: int) -> tuple[str, ...]:
    """FineHARD's hard-negative keys ``"0"`` .. ``"n-1"`` (one shared tuple per ``n``)."""
    while len(_DEFAULT_KEYS) <= n:
        _DEFAULT_KEYS.append(tuple(map(str, range(len(_DEFAULT_KEYS)))))
    return _DEFAULT_KEYS[n]


def _offsets(lengths: Sequence[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def to_batch(rows: Sequence[tuple[int, int, FineHARDRecord]]) -> pa.RecordBatch:
    """(file, index, record) rows as one record batch of :data:`SCHEMA`, built column by column (flat lists;
    the models' ``__dict__`` read directly, the hot loop of a build)."""
    files, indices, paths, captions, shorts, chinese = [], [], [], [], [], []
    coords_n, coords, ints_n, ints, texts_n, texts = [], [], [], [], [], []
    for file, index, record in rows:
        fields = record.__dict__
        files.append(file)
        indices.append(index)
        paths.append(fields["f_path"])
        captions.append(fields["caption"])
        shorts.append(fields["short_caption"])
        is_cn = fields["is_cn"]
        chinese.append("" if is_cn is None else json.dumps(is_cn))
        n_coords, n_texts = len(coords), len(texts)
        for box in fields["bbox_info"]:
            b = box.__dict__
            bbox, negs = b["bbox"], b["short_expr_negs"]
            coords.append(len(bbox))
            coords.extend(bbox)
            texts.append(b["short_expr"])
            texts.append(b["long_expr"])
            if negs is None:
                ints += (b["flag_short_neg"], -1, 0)
                continue
            names = tuple(negs)
            texts.extend(negs.values())
            if names == default_keys(len(names)):
                ints += (b["flag_short_neg"], len(names), 0)
            else:
                ints += (b["flag_short_neg"], len(names), 1)
                texts.extend(names)
        coords_n.append(len(coords) - n_coords)
        texts_n.append(len(texts) - n_texts)
        ints_n.append(BOX_INTS * len(fields["bbox_info"]))
    columns = [
        pa.array(files, pa.int32()),
        pa.array(indices, pa.int64()),
        pa.array(paths, pa.string()),
        pa.array(captions, pa.string()),
        pa.array(shorts, pa.string()),
        pa.array(chinese, pa.string()),
        pa.ListArray.from_arrays(_offsets(coords_n), pa.array(coords, pa.float64())),
        pa.ListArray.from_arrays(_offsets(ints_n), pa.array(ints, pa.int64())),
        pa.ListArray.from_arrays(_offsets(texts_n), pa.array(texts, pa.string())),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)
