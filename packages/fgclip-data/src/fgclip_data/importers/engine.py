"""Running an import: the output layout, the seeded split, chunked writing and resuming.

Output (FineHARD's layout; ``--data.train OUT/jsonfiles/train --data.val OUT/jsonfiles/val --data.images
OUT/images`` trains on it)::

    OUT/images/<key><suffix>                       every imported image (copied, hard-linked or extracted)
    OUT/jsonfiles/train/part-00000.jsonl ...       FineHARD records, f_path relative to OUT/images
    OUT/jsonfiles/val/part-00000.jsonl ...
    OUT/manifest.json                              source, options, item count and digest; counts when complete
    OUT/report.json                                the counted report (what was imported, what skipped and why)
    OUT/.import/part-00000.json                    per-chunk reports: a chunk with one is done (resume)

The source's items are listed first (no image read), in a deterministic order; the validation items are a seeded
sample of them (``val_size`` items, or that fraction when below 1), so the split depends only on the source and
the seed, and train and val are disjoint. Items are converted in chunks; each chunk's files are written
atomically and the chunk is marked done last, so an interrupted import resumes at the first unfinished chunk.
A non-empty output folder is resumed only when its manifest names the same source, options and items;
anything else is refused, so two imports never mix.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fgclip_data.finehard.paths import safe_join
from fgclip_data.importers.base import Source
from fgclip_data.importers.convert import IMAGE_FOLDER, ConvertOptions, convert
from fgclip_data.report import DataError, Report

MANIFEST = "manifest.json"
REPORT = "report.json"
STATE = ".import"
FORMAT_VERSION = 1


@dataclass
class ImportOptions(ConvertOptions):
    """Options of an import (those of :class:`ConvertOptions` plus the split and the writing).

    Attributes:
        val_size: validation items: a count (≥ 1) or a fraction of the items (< 1).
        chunk_size: items converted and written per chunk (the unit of resuming).
        link: hard-link image files instead of copying them (same file system; copies when linking fails).
    """

    val_size: float = 0.1
    chunk_size: int = 1000
    link: bool = False

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.negatives < 0 or self.val_size < 0:
            raise ValueError(
                f"import options: chunk_size >= 1, negatives >= 0, val_size >= 0 (got {self.chunk_size}, "
                f"{self.negatives}, {self.val_size})"
            )

    def key(self) -> dict:
        """The options that change the result (the resume check compares these)."""
        data = asdict(self)
        data.pop("link")
        return data


def val_count(val_size: float, n: int) -> int:
    if val_size < 0:
        raise ValueError(f"--val-size must be ≥ 0, got {val_size}")
    k = round(val_size * n) if val_size < 1 else int(val_size)
    return min(k, n)


def split_of(keys: list[str], val_size: float, seed: int) -> list[str]:
    """'train' or 'val' per item: a seeded sample of ``val_count`` items is val."""
    chosen = set(random.Random(f"split/{seed}").sample(range(len(keys)), val_count(val_size, len(keys))))
    return ["val" if i in chosen else "train" for i in range(len(keys))]


def _digest(keys: list[str]) -> str:
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_json(path: Path, value) -> None:
    _atomic_write(path, json.dumps(value, indent=2, ensure_ascii=False).encode())


def _check_output(out: Path, manifest: dict) -> dict | None:
    """The existing manifest when ``out`` holds this same import (resume), None when ``out`` is new or empty;
    raises :class:`DataError` for anything else."""
    existing = out / MANIFEST
    if existing.is_file():
        try:
            old = json.loads(existing.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError("unreadable import manifest; choose another --out", str(existing)) from err
        for part in ("source", "source_options", "options", "items", "digest"):
            if old.get(part) != manifest[part]:
                raise DataError(
                    f"holds another import (its {part} differ: {old.get(part)!r} here, {manifest[part]!r} now); "
                    "choose another --out (imports are never mixed)",
                    str(out),
                )
        return old
    if out.exists() and any(p.name != ".import.lock" for p in out.iterdir()):
        raise DataError("is not empty and holds no import manifest; choose an empty or new --out", str(out))
    return None


def _write_image(out: Path, relative: str, data: bytes, source: Path | None, link: bool) -> None:
    target = safe_join(out / IMAGE_FOLDER, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    if link and source is not None:
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
            os.replace(tmp, target)
            return
        except OSError:
            pass
    _atomic_write(target, data)


def _chunk_name(index: int) -> str:
    return f"part-{index:05d}"


def run_import(
    source: Source,
    out: str | Path,
    options: ImportOptions,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict:
    """Import ``source`` into ``out`` (resuming the same import there) and return the final manifest (with
    ``counts`` per split, ``skipped`` and ``resumed``); ``report`` receives the counts of the whole import.
    ``progress(n)`` is called as items are done, ``on_total(n)`` once the source's items are listed."""
    out = Path(out)
    source.check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".import.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _run_locked(source, out, options, report if report is not None else Report(), progress, on_total)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_locked(source: Source, out: Path, options: ImportOptions, report: Report, progress, on_total) -> dict:
    scan_report = Report(strict=report.strict)
    items = source.scan(scan_report)
    if on_total:
        on_total(len(items))
    if not items:
        raise DataError(f"the {source.name} source holds nothing to import")
    keys = [source.item_key(item) for item in items]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k, n in Counter(keys).items() if n > 1)
        raise DataError(f"two items share the key {duplicate!r} (their images would overwrite each other)")
    manifest = {
        "format": FORMAT_VERSION,
        "source": source.name,
        "source_options": source.identity(),
        "options": options.key(),
        "items": len(keys),
        "digest": _digest(keys),
        "image_root": IMAGE_FOLDER,
        "jsonfiles": {"train": "jsonfiles/train", "val": "jsonfiles/val"},
        "complete": False,
    }
    old = _check_output(out, manifest)
    resumed = old is not None
    if not resumed:
        _write_json(out / MANIFEST, manifest)
    splits = split_of(keys, options.val_size, options.seed)
    options = ImportOptions(**{**asdict(options), "categories": sorted({*options.categories, *source.categories()})})
    state = out / STATE
    chunks = range(0, len(items), options.chunk_size)
    for c, start in enumerate(chunks):
        done_file = state / f"{_chunk_name(c)}.json"
        stop = min(start + options.chunk_size, len(items))
        if done_file.is_file():
            if progress:
                progress(stop - start)
            continue
        chunk_report = Report(strict=report.strict)
        if c == 0:
            chunk_report.merge(scan_report)
        lines: dict[str, list[str]] = {"train": [], "val": []}
        for i, candidate in zip(range(start, stop), source.load(items[start:stop], chunk_report), strict=True):
            if progress:
                progress(1)
            if candidate is None:
                continue
            try:
                safe_join(out / IMAGE_FOLDER, f"{candidate.key}{candidate.suffix}")
            except ValueError:
                chunk_report.problem("image path would leave the output folder (absolute or '..')", candidate.where)
                continue
            result = convert(candidate, options, chunk_report)
            if result is None:
                continue
            record, data = result
            local = None if isinstance(candidate.image, bytes) else Path(candidate.image)
            _write_image(out, record["f_path"], data, local, options.link)
            lines[splits[i]].append(json.dumps(record, ensure_ascii=False))
            chunk_report.count(f"{splits[i]} records")
        for split, rows in lines.items():
            if rows:
                _atomic_write(out / "jsonfiles" / split / f"{_chunk_name(c)}.jsonl", ("\n".join(rows) + "\n").encode())
        _write_json(done_file, _report_json(chunk_report))
    total = Report()
    for done_file in sorted(state.glob("part-*.json")):
        _merge_json(total, json.loads(done_file.read_text()))
    for split in ("train", "val"):
        (out / "jsonfiles" / split).mkdir(parents=True, exist_ok=True)
    manifest.update(
        complete=True,
        counts={split: total.done.get(f"{split} records", 0) for split in ("train", "val")},
        skipped=total.skipped,
    )
    _write_json(out / REPORT, _report_json(total))
    _write_json(out / MANIFEST, manifest)
    report.merge(total)
    return {**manifest, "resumed": resumed}


def _report_json(report: Report) -> dict:
    return {"done": dict(report.done), "problems": dict(report.counts), "examples": report.examples}


def _merge_json(report: Report, data: dict) -> None:
    other = Report()
    other.done.update(data.get("done", {}))
    other.counts.update(data.get("problems", {}))
    other.examples.update(data.get("examples", {}))
    report.merge(other)
