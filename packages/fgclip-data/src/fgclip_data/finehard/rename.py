"""Rename img2dataset downloads to FineHARD's canonical keys (``url2key_jsons``), correctly.

The reference script merges the URL->key maps into a *list* (so every lookup fails inside a bare ``except``)
and only scans the top level of each download folder, while img2dataset writes into shard sub-folders: it most
likely renames nothing. Here:

* the maps are merged into one dict; a URL mapped to two different keys is reported (first wins);
* download folders are walked recursively, reading img2dataset's per-image ``<key>.json`` metadata;
* every copy is atomic (temporary file + rename), sources are never modified or deleted, an existing
  destination image or ``{key}.json`` sidecar is never overwritten (identical content counts as already done, so
  reruns are idempotent);
* a malformed url2key entry (a key that is not a string) or metadata file (unreadable, not an object, a key
  that is not a plain name) is counted and skipped; the rest of the rename proceeds;
* keys that are not plain file names (``/``, ``..``, absolute paths) are refused;
* the report counts copied, already present, unmapped URLs, failed downloads, duplicates, conflicts and the
  mapped keys that have no downloaded image.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ijson

from fgclip_data.report import Report

PARENT = re.compile(r"^coyo_image_(\d+)$")
SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")


def load_url2key(folder: str | Path, report: Report) -> dict[str, str]:
    """Merge every ``*.json`` URL->key object in ``folder`` (streamed with ijson)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else [folder]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no url2key JSON files in {folder}")
    mapping: dict[str, str] = {}
    for file in files:
        with open(file, "rb") as f:
            try:
                for url, key in ijson.kvitems(f, ""):
                    if not isinstance(key, str):
                        report.problem("url2key value is not a string (entry ignored)", str(file), field=url)
                        continue
                    previous = mapping.setdefault(url, key)
                    if previous != key:
                        report.problem("URL mapped to two different keys (first kept)", str(file), field=url)
            except (ijson.JSONError, UnicodeDecodeError, ValueError):
                report.problem("malformed url2key JSON; rest of the file skipped", str(file))
    report.count("mapped URLs", len(mapping))
    return mapping


@dataclass(frozen=True)
class Download:
    """One image img2dataset wrote: its metadata file, image file and the (parent, subfolder) it belongs to."""

    meta: Path
    image: Path
    url: str
    status: str
    parent: str
    subfolder: str


def iter_downloads(download_root: str | Path, report: Report) -> Iterator[Download]:
    """Every per-image metadata JSON under ``download_root/coyo_image_{i}/{k:05d}/`` (any depth below)."""
    root = Path(download_root)
    for parent in sorted(p for p in root.iterdir() if p.is_dir() and PARENT.match(p.name)):
        for sub in sorted(p for p in parent.iterdir() if p.is_dir()):
            for meta in sorted(sub.rglob("*.json")):
                if meta.name.endswith("_stats.json"):
                    continue
                try:
                    data = json.loads(meta.read_text(encoding="utf-8"))
                except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
                    report.problem("unreadable download metadata", str(meta))
                    continue
                if not isinstance(data, dict) or "url" not in data:
                    continue
                key = data.get("key", meta.stem)
                if not isinstance(key, str) or not SAFE_KEY.match(key) or not isinstance(data["url"], str):
                    report.problem("download metadata with a malformed key or url", str(meta))
                    continue
                image = meta.with_name(f"{key}.jpg")
                yield Download(meta, image, data["url"], str(data.get("status", "success")), parent.name, sub.name)


def _atomic_copy(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    if link:
        os.link(src, tmp)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def rename(
    url2key: str | Path,
    download_root: str | Path,
    output_root: str | Path,
    dry_run: bool = False,
    link: bool = False,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Copy (or hard-link with ``link``) every downloaded image to ``output_root/coyo_image_{i}/{k:05d}/{key}.jpg``
    with its metadata rewritten to the canonical key. ``dry_run`` counts what would happen and writes nothing."""
    report = report if report is not None else Report()
    mapping = load_url2key(url2key, report)
    output_root = Path(output_root)
    seen_urls: set[str] = set()
    claimed: dict[Path, str] = {}
    for item in iter_downloads(download_root, report):
        if progress:
            progress(1)
        if item.status != "success":
            report.count(f"failed downloads ({item.status})")
            continue
        if item.url not in mapping:
            report.problem("downloaded URL not in url2key (unmapped)", str(item.meta), field="url")
            continue
        if item.url in seen_urls:
            report.problem("URL downloaded twice (second copy ignored)", str(item.meta), field="url")
            continue
        seen_urls.add(item.url)
        key = mapping[item.url]
        if not SAFE_KEY.match(key) or key in (".", ".."):
            report.problem(f"key {key!r} is not a plain file name: refused", str(item.meta), field="url")
            continue
        if not item.image.is_file():
            report.problem("metadata without its image", str(item.meta))
            continue
        target = output_root / item.parent / item.subfolder / f"{key}.jpg"
        if claimed.setdefault(target, item.url) != item.url:
            report.problem("two URLs map to the same key (second ignored)", str(item.meta), field="url")
            continue
        meta = json.loads(item.meta.read_text(encoding="utf-8"))
        meta["key"] = key
        sidecar_text = json.dumps(meta, indent=4, ensure_ascii=False)
        sidecar = target.with_suffix(".json")
        if sidecar.exists() and sidecar.read_bytes() != sidecar_text.encode():
            report.problem("destination metadata exists with other content: not overwritten", str(sidecar))
            continue
        if target.exists():
            if filecmp.cmp(item.image, target, shallow=False):
                report.count("already present")
            else:
                report.problem("destination exists with other content: not overwritten", str(target))
            continue
        report.count("would copy" if dry_run else ("linked" if link else "copied"))
        if dry_run:
            continue
        _atomic_copy(item.image, target, link)
        if not sidecar.exists():
            tmp = target.with_name(f".{key}.json.tmp")
            tmp.write_text(sidecar_text)
            os.replace(tmp, sidecar)
    missing = sum(1 for url in mapping if url not in seen_urls)
    if missing:
        report.count("mapped keys without a downloaded image", missing)
    return report
