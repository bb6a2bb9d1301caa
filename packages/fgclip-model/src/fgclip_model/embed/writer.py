"""The output folder, in clip-retrieval's layout, written one part at a time and never half:

```
embed_info.json                      family, dim, normalised, dtype, model, part size, item count (checked on resume
                                     and by search)
img_emb/img_emb_{N}.npy              [rows, dim] image embeddings of part N
text_emb/text_emb_{N}.npy            [rows, dim] caption embeddings (same rows), when there are captions
metadata/metadata_{N}.parquet        one row per embedding row: key, image_path, caption, extra columns
region_emb/region_emb_{N}.npy        [boxes, dim] region embeddings (FineHARD boxes)
region_metadata/region_metadata_{N}.parquet   key, image_path, region, x1, y1, x2, y2, caption
skipped/skipped_{N}.parquet          key, image_path, reason of every unreadable image of the part
_parts/{N}.done                      the part's marker (JSON counts), written last
```

``N`` is zero-padded to the digits of the part count, so sorted file names are part order (autofaiss and
clip-retrieval's back end concatenate the folders in sorted order: row ``i`` of the concatenated embeddings is row
``i`` of the concatenated metadata). Every file is written under ``_tmp/`` and renamed into place; the marker comes
last, so a part without a marker is redone from scratch and readers use only marked parts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INFO = "embed_info.json"
# folder -> file prefix and suffix of each per-part file
PART_FILES = {
    "img_emb": ("img_emb_", ".npy"),
    "text_emb": ("text_emb_", ".npy"),
    "metadata": ("metadata_", ".parquet"),
    "region_emb": ("region_emb_", ".npy"),
    "region_metadata": ("region_metadata_", ".parquet"),
    "skipped": ("skipped_", ".parquet"),
}
# the fields a resumed run and a search must agree with
CHECKED = ("family", "dim", "normalised", "dtype", "model", "part_size", "items", "regions", "text_walk", "source")


class MismatchError(ValueError):
    """The output folder was made by another model or with other settings."""


def arrow():
    """``(pyarrow, pyarrow.parquet)``, or an ImportError naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ImportError('embeddings need pyarrow: pip install "fgclip-model[embed]"') from err
    return pyarrow, pyarrow.parquet


def part_name(part: int, parts: int) -> str:
    return str(part).zfill(len(str(max(parts - 1, 0))))


def part_path(folder: Path, kind: str, part: int, parts: int) -> Path:
    prefix, suffix = PART_FILES[kind]
    return folder / kind / f"{prefix}{part_name(part, parts)}{suffix}"


def marker(folder: Path, part: int) -> Path:
    return folder / "_parts" / f"{part}.done"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_or_write_info(folder: Path, info: dict[str, Any]) -> None:
    """Write ``embed_info.json``, or check that an existing one agrees on :data:`CHECKED` (one-line refusal)."""
    path = folder / INFO
    if path.is_file():
        old = json.loads(path.read_text())
        for key in CHECKED:
            if old.get(key) != info.get(key):
                raise MismatchError(
                    f"{folder} holds embeddings made with {key}={old.get(key)!r}, this run has {key}={info.get(key)!r}"
                    " (use another --out folder)"
                )
        return
    _atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def read_info(folder: Path) -> dict[str, Any]:
    path = Path(folder) / INFO
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {INFO}: not an output folder of `fgclip-model embed`")
    return json.loads(path.read_text())


def done_parts(folder: Path) -> list[int]:
    """The parts whose marker exists (finished), sorted."""
    markers = (Path(folder) / "_parts").glob("*.done")
    return sorted(int(m.stem) for m in markers if m.stem.isdigit())


# the types of the fixed columns (so a part without rows has the schema of one with rows)
COLUMN_TYPES = {"region": "int64", "x1": "float64", "y1": "float64", "x2": "float64", "y2": "float64"}


def _table(rows: list[dict[str, Any]], columns: list[str]):
    pa, _ = arrow()
    names = list(dict.fromkeys([*columns, *(k for r in rows for k in r)]))
    fixed = {n: pa.type_for_alias(COLUMN_TYPES.get(n, "string")) for n in columns}
    return pa.table({n: pa.array([r.get(n) for r in rows], type=fixed.get(n)) for n in names})


@dataclass
class PartData:
    """Everything one part writes (arrays may have zero rows)."""

    image: np.ndarray | None
    text: np.ndarray | None
    metadata: list[dict[str, Any]]
    region: np.ndarray | None
    region_metadata: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def write_part(
    folder: Path, part: int, parts: int, data: PartData, rank: int, before_marker: Callable[[], None] | None = None
) -> None:
    """Write part ``part``'s files under ``_tmp/``, rename each into place, then write its marker
    (``before_marker``: a test hook run between the two)."""
    _, pq = arrow()
    tmp = folder / "_tmp" / f"rank{rank}"
    tmp.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []

    def stage(kind: str, write) -> None:
        final = part_path(folder, kind, part, parts)
        path = tmp / final.name
        write(path)
        staged.append((path, final))

    for kind, array in (("img_emb", data.image), ("text_emb", data.text), ("region_emb", data.region)):
        if array is not None:
            stage(kind, lambda p, a=array: np.save(p, a))
    stage("metadata", lambda p: pq.write_table(_table(data.metadata, ["key", "image_path"]), p))
    if data.region is not None:
        columns = ["key", "image_path", "region", "x1", "y1", "x2", "y2", "caption"]
        stage("region_metadata", lambda p: pq.write_table(_table(data.region_metadata, columns), p))
    if data.skipped:
        stage("skipped", lambda p: pq.write_table(_table(data.skipped, ["key", "image_path", "reason"]), p))
    for path, final in staged:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
    if before_marker is not None:
        before_marker()
    counts = {
        "rows": len(data.metadata),
        "regions": len(data.region_metadata),
        "skipped": len(data.skipped),
        "files": sorted(final.relative_to(folder).as_posix() for _, final in staged),
    }
    _atomic_write_text(marker(folder, part), json.dumps(counts) + "\n")


def clear_part(folder: Path, part: int, parts: int) -> None:
    """Remove what an interrupted run left of part ``part`` (no marker: its files cannot be trusted)."""
    for kind in PART_FILES:
        part_path(folder, kind, part, parts).unlink(missing_ok=True)


def clean_tmp(folder: Path, rank: int) -> None:
    shutil.rmtree(folder / "_tmp" / f"rank{rank}", ignore_errors=True)
    with contextlib.suppress(OSError):
        (folder / "_tmp").rmdir()  # the last rank out removes the folder


def part_counts(folder: Path, part: int) -> dict[str, Any]:
    return json.loads(marker(folder, part).read_text())
