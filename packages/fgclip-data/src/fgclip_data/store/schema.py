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

import numpy as np
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
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def to_batch(rows: Sequence[tuple[int, int, FineHARDRecord]]) -> pa.RecordBatch:
    """(file, index, record) rows as one record batch of :data:`SCHEMA`, built column by column (flat lists;
    the models' ``__dict__`` read directly, the hot loop of a build)."""
    files, indices, paths, captions, shorts, chinese, box_counts = [], [], [], [], [], [], []
    coords_n, coords, short, long, flags, negs_n, no_negs, keys, values = [], [], [], [], [], [], [], [], []
    for file, index, record in rows:
        fields = record.__dict__
        files.append(file)
        indices.append(index)
        paths.append(fields["f_path"])
        captions.append(fields["caption"])
        shorts.append(fields["short_caption"])
        is_cn = fields["is_cn"]
        chinese.append("" if is_cn is None else json.dumps(is_cn))
        boxes = fields["bbox_info"]
        box_counts.append(len(boxes))
        for box in boxes:
            b = box.__dict__
            bbox, negs = b["bbox"], b["short_expr_negs"]
            coords_n.append(len(bbox))
            coords.extend(bbox)
            short.append(b["short_expr"])
            long.append(b["long_expr"])
            flags.append(b["flag_short_neg"])
            no_negs.append(negs is None)
            if negs:
                negs_n.append(len(negs))
                keys.extend(negs)
                values.extend(negs.values())
            else:
                negs_n.append(0)
    negs_array = pa.MapArray.from_arrays(
        _offsets(negs_n),
        pa.array(keys, pa.string()),
        pa.array(values, pa.string()),
        mask=pa.array(no_negs, pa.bool_()),
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
        pa.array(files, pa.int32()),
        pa.array(indices, pa.int64()),
        pa.array(paths, pa.string()),
        pa.array(captions, pa.string()),
        pa.array(shorts, pa.string()),
        pa.array(chinese, pa.string()),
        pa.ListArray.from_arrays(_offsets(box_counts), boxes),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)
