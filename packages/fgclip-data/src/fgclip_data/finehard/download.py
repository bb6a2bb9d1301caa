"""Download FineHARD's images with img2dataset (the ``[download]`` extra), resumable, with a stats summary.

FineHARD ships its URL lists as ``FineHARD/coyo_image_{i}/{k:05d}.parquet`` (i = 0..20, k = 0..99; the last
parent stops at 00050). Each list goes to ``OUT/coyo_image_{i}/{k:05d}/`` with the reference options
(as the FineHARD instructions run it): no resizing (images are still decoded and re-encoded, so corrupt files count as
failures), parquet input with a ``url`` column, JPEG, 10 000 samples a shard, 10 s timeout, sha256 hashes.
img2dataset's incremental mode skips finished shards, so rerunning the command resumes; lists that do not
exist are skipped (the reference asked for ``coyo_image_20/00051..00099``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fgclip_data.report import Report

URL_LIST = re.compile(r"^coyo_image_(\d+)$")


@dataclass
class DownloadOptions:
    """img2dataset settings (reference values; processes/threads default to this machine)."""

    processes: int = max(1, os.cpu_count() or 1)
    threads: int = 64
    timeout: int = 10
    retries: int = 0
    shard_size: int = 10_000
    encode_format: str = "jpg"
    # img2dataset's distributor: "multiprocessing" on one machine, "pyspark" over a Spark cluster (the caller
    # creates the SparkSession first; see docs/data.md)
    distributor: str = "multiprocessing"
    output_format: str = "files"  # "webdataset" writes tar shards that `fgclip-data shards write` also makes


def url_lists(finehard_root: str | Path, parents: list[int] | None = None) -> list[tuple[Path, str, str]]:
    """(parquet, parent folder name, subfolder name) of every URL list under ``finehard_root``."""
    root = Path(finehard_root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and URL_LIST.match(p.name)):
        if parents is not None and int(URL_LIST.match(folder.name).group(1)) not in parents:
            continue
        for parquet in sorted(folder.glob("*.parquet")):
            found.append((parquet, folder.name, parquet.stem))
    if not found:
        raise FileNotFoundError(f"no coyo_image_*/*.parquet URL lists under {root}")
    return found


def check_url_list(parquet: Path) -> int:
    """The URL count of one list, after checking it is a readable parquet file with a ``url`` column (img2dataset
    would fail on it inside its worker processes, with their tracebacks)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(parquet)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{parquet}: not a readable parquet URL list, truncated or damaged? ({err})") from err
    if "url" not in metadata.schema_arrow.names:
        raise ValueError(f"{parquet}: no url column (columns: {', '.join(metadata.schema_arrow.names)})")
    return metadata.metadata.num_rows


def checked_url_lists(finehard_root: str | Path, parents: list[int] | None = None) -> list[tuple[Path, str, str]]:
    """:func:`url_lists`, every one checked (:func:`check_url_list`) before any download starts."""
    lists = url_lists(finehard_root, parents)
    for parquet, _, _ in lists:
        check_url_list(parquet)
    return lists


def summarise_stats(output_root: str | Path, report: Report) -> Counter:
    """Add up img2dataset's ``*_stats.json`` files under ``output_root``."""
    totals: Counter = Counter()
    for stats_file in Path(output_root).rglob("*_stats.json"):
        try:
            stats = json.loads(stats_file.read_text())
        except json.JSONDecodeError:
            report.problem("unreadable img2dataset stats", str(stats_file))
            continue
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += int(stats.get(key, 0))
        for status, n in (stats.get("status_dict") or {}).items():
            totals[f"status: {status}"] += int(n)
    return totals


def download(
    finehard_root: str | Path,
    output_root: str | Path,
    options: DownloadOptions | None = None,
    parents: list[int] | None = None,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run img2dataset over every URL list and summarise its stats into the report."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks online at import
    try:
        from img2dataset import download as img2dataset_download
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImportError('the download command needs img2dataset: pip install "fgclip-data[download]"') from err

    options = options or DownloadOptions()
    report = report if report is not None else Report()
    for parquet, parent, sub in checked_url_lists(finehard_root, parents):
        out = Path(output_root) / parent / sub
        out.mkdir(parents=True, exist_ok=True)
        img2dataset_download(
            url_list=str(parquet),
            output_folder=str(out),
            input_format="parquet",
            url_col="url",
            output_format=options.output_format,
            distributor=options.distributor,
            resize_mode="no",
            encode_format=options.encode_format,
            number_sample_per_shard=options.shard_size,
            processes_count=options.processes,
            thread_count=options.threads,
            timeout=options.timeout,
            retries=options.retries,
            compute_hash="sha256",
            incremental_mode="incremental",
            enable_wandb=False,
        )
        report.count("url lists")
        if progress:
            progress(1)
    totals = summarise_stats(output_root, report)
    for key, n in totals.items():
        report.count(f"img2dataset {key}", n)
    return report
