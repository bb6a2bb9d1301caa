"""The Arrow layout of one validated FineHARD record, and the conversion of a batch of records into it.

A row is a record as :func:`~fgclip_data.schema.parse_record` validated it (malformed boxes already dropped), plus
where it came from: ``file`` (an index into the manifest's source files) and ``index`` (the record's index in
that file), which name the record in reports and key its seeded region-caption draws exactly as the JSON path does.
``is_cn`` holds the JSON text of the value ("" when the record has none); ``short_expr_negs`` is a map (null when
the record has none), so a stored record reads back equal to the validated one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from fgclip_data.schema import FineHARDRecord

BOX = pa.struct(
    [
        ("bbox", pa.list_(pa.float64())),
        ("short_expr", pa.string()),
        ("long_expr", pa.string()),
        ("flag_short_neg", pa.int64()),
        ("short_expr_negs", pa.map_(pa.string(), pa.string())),
    ]
)

SCHEMA = pa.schema(
    [
        ("file", pa.int32()),
        ("index", pa.int64()),
        ("f_path", pa.string()),
        ("caption", pa.string()),
        ("short_caption", pa.string()),
        ("is_cn", pa.string()),
        ("bbox_info", pa.list_(BOX)),
    ]
)


NOT_UTF8 = "text that is not UTF-8 (a lone surrogate escape): record skipped"


def unencodable(record: FineHARDRecord) -> str | None:
    """The first field whose text cannot be stored as UTF-8 (JSON allows lone ``\\ud800`` escapes; Arrow
    strings do not), or None."""
    texts = [("f_path", record.f_path), ("caption", record.caption), ("short_caption", record.short_caption)]
    for k, box in enumerate(record.bbox_info):
        texts += [(f"bbox_info.{k}.short_expr", box.short_expr), (f"bbox_info.{k}.long_expr", box.long_expr)]
        texts += [(f"bbox_info.{k}.short_expr_negs", t) for t in (box.short_expr_negs or {}).values()]
        texts += [(f"bbox_info.{k}.short_expr_negs", t) for t in (box.short_expr_negs or {})]
    for field, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return field
    return None


def _offsets(lengths: Sequence[int]) -> pa.Array:
    out, total = [0], 0
    for n in lengths:
        total += n
        out.append(total)
    return pa.array(out, pa.int32())


def to_batch(rows: Sequence[tuple[int, int, FineHARDRecord]]) -> pa.RecordBatch:
    """(file, index, record) rows as one record batch of :data:`SCHEMA`, built column by column (flat lists)."""
    box_counts, coords_n, coords = [], [], []
    short, long, flags, negs_n, neg_valid, keys, values = [], [], [], [], [], [], []
    for _, _, record in rows:
        box_counts.append(len(record.bbox_info))
        for box in record.bbox_info:
            coords_n.append(len(box.bbox))
            coords.extend(box.bbox)
            short.append(box.short_expr)
            long.append(box.long_expr)
            flags.append(box.flag_short_neg)
            negs = box.short_expr_negs
            neg_valid.append(negs is not None)
            negs_n.append(len(negs) if negs else 0)
            if negs:
                keys.extend(negs.keys())
                values.extend(negs.values())
    negs_array = pa.MapArray.from_arrays(
        _offsets(negs_n),
        pa.array(keys, pa.string()),
        pa.array(values, pa.string()),
        mask=pa.array([not v for v in neg_valid], pa.bool_()),
    )
    boxes = pa.StructArray.from_arrays(
        [
            pa.ListArray.from_arrays(_offsets(coords_n), pa.array(coords, pa.float64())),
            pa.array(short, pa.string()),
            pa.array(long, pa.string()),
            pa.array(flags, pa.int64()),
            negs_array,
        ],
        fields=list(BOX),
    )
    columns = [
        pa.array([r[0] for r in rows], pa.int32()),
        pa.array([r[1] for r in rows], pa.int64()),
        pa.array([r[2].f_path for r in rows], pa.string()),
        pa.array([r[2].caption for r in rows], pa.string()),
        pa.array([r[2].short_caption for r in rows], pa.string()),
        pa.array(["" if r[2].is_cn is None else json.dumps(r[2].is_cn) for r in rows], pa.string()),
        pa.ListArray.from_arrays(_offsets(box_counts), boxes),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)
