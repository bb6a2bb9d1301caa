"""Building a store from FineHARD-format record files, streamed and resumable; verifying one.

Records are read and validated exactly as :func:`~fgclip_data.finehard.reader.iter_records` does (same
problems, counted by kind in the same report), collected into record batches of ``batch_rows`` rows and written
as Arrow IPC files ("parts") of ``part_rows`` rows: memory stays bounded by one batch. A part is written under a
temporary name and renamed when complete, then the manifest records it with the reading position and the report
so far; a killed build rerun with the same sources continues after the last listed part (what it had read past
that is read again), and a build from other sources into the same folder is refused, so a store never mixes.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from fgclip_data.finehard.reader import record_files
from fgclip_data.report import Report
from fgclip_data.store.manifest import MANIFEST, Manifest, Part, SourceFile, StoreError, sha256
from fgclip_data.store.parse import parse_file
from fgclip_data.store.schema import SCHEMA, to_batch, unencodable


def source_files(sources: Sequence[str | Path]) -> list[Path]:
    """The record files behind every source, in order (see :func:`~fgclip_data.finehard.reader.record_files`)."""
    return [file for source in sources for file in record_files(source)]


def _prepare(out: Path, manifest: Manifest) -> Manifest:
    """The manifest to continue from: ``manifest`` for a new store, the folder's own when it is the same build."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).is_file():
        foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise StoreError(f"{out} is not empty and holds no {MANIFEST} ({shown}): choose an empty folder")
        return manifest
    previous = Manifest.load(out)
    if previous.files != manifest.files:
        changed = next(
            (f"{a.path} (now {b.path})" for a, b in zip(previous.files, manifest.files, strict=False) if a != b),
            f"{len(previous.files)} files (now {len(manifest.files)})",
        )
        raise StoreError(
            f"{out} holds a store of other sources than these (first difference: {changed}); "
            "refusing to mix: choose another folder"
        )
    if (previous.batch_rows, previous.part_rows) != (manifest.batch_rows, manifest.part_rows):
        raise StoreError(
            f"{out} was started with batches of {previous.batch_rows} rows in parts of {previous.part_rows}; "
            "resume it with the same sizes"
        )
    for part in previous.parts:
        path = out / part.name
        if not path.is_file() or path.stat().st_size != part.bytes:
            raise StoreError(f"{path} does not match the manifest (missing or resized): remove the store")
    return previous


END = -1  # "the file is done": the position moves on to the next file


def _batch(rows: list, file: Path, report: Report) -> pa.RecordBatch:
    """``to_batch``, with the rare record holding a value Arrow cannot store (text that is not UTF-8, an integer
    beyond int64) reported and left out."""
    try:
        return to_batch(rows)
    except (UnicodeEncodeError, OverflowError):
        kept = []
        for row in rows:
            problem = unencodable(row[2])
            if problem is None:
                kept.append(row)
            else:
                field, reason = problem
                report.problem(reason, str(file), row[1], field)
                report.done["records"] -= 1
        return to_batch(kept)


def _taken(report: Report) -> Report:
    """What ``report`` holds, moved into a new report (``report`` is left empty and goes on counting)."""
    taken = Report(report.strict, report.examples_per_reason, report.counts.copy(), report.examples, report.done.copy())
    report.counts.clear()
    report.done.clear()
    report.examples = {}
    return taken


def convert(
    file: Path, k: int, skip: int, batch_rows: int, strict: bool
) -> Iterator[tuple[pa.RecordBatch, int, Report]]:
    """Record batches of source file number ``k`` from record ``skip`` on, each with the index after its last
    record (:data:`END` for the file's last, possibly empty, batch) and the report of the records it covers."""
    report, pending = Report(strict=strict), []
    collecting = gc.isenabled()
    gc.disable()  # records hold no cycles; collections would rescan the pending batch for nothing
    try:
        for index, record in parse_file(file, report, skip):
            if record is None:
                continue
            pending.append((k, index, record))
            if len(pending) == batch_rows:
                batch = _batch(pending, file, report)
                pending = []
                yield batch, index + 1, _taken(report)
        yield _batch(pending, file, report), END, _taken(report)
    finally:
        if collecting:
            gc.enable()


def _convert_to(file: Path, k: int, skip: int, batch_rows: int, strict: bool, out: Path) -> list[tuple[int, Report]]:
    """:func:`convert` in a worker process: the batches go to the Arrow file ``out``, (next index, report)
    of each comes back."""
    done = []
    with ipc.new_file(pa.OSFile(str(out), "wb"), SCHEMA) as writer:
        for batch, after, report in convert(file, k, skip, batch_rows, strict):
            writer.write_batch(batch)
            done.append((after, report))
    return done


def _converted_in_parallel(files, start, batch_rows, strict, workers, scratch: Path):
    """What :func:`convert` gives for every file from ``start`` on, computed by ``workers`` processes a file
    each (at most ``workers + 1`` files ahead of the writer, in scratch Arrow files) and delivered in order."""
    from concurrent.futures import ProcessPoolExecutor

    first, skip = start
    jobs = [(f, k, skip if k == first else 0) for k, f in enumerate(files) if k >= first]
    scratch.mkdir(exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        running = {}

        def submit(n: int) -> None:
            if n < len(jobs):
                file, k, skip_k = jobs[n]
                running[n] = pool.submit(_convert_to, file, k, skip_k, batch_rows, strict, scratch / f"{k}.arrow")

        for n in range(workers + 1):
            submit(n)
        for n, (_, k, _) in enumerate(jobs):
            done = running.pop(n).result()
            submit(n + workers + 1)
            path = scratch / f"{k}.arrow"
            with pa.memory_map(str(path)) as source:
                reader = ipc.open_file(source)
                for b, (after, report) in enumerate(done):
                    yield k, reader.get_batch(b), after, report
            path.unlink()


def build_store(
    sources: Sequence[str | Path],
    out: str | Path,
    batch_rows: int = 16_384,
    part_rows: int = 262_144,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
    stop_after_parts: int | None = None,
    workers: int = 1,
) -> Manifest:
    """Build (or resume building) the store ``out`` from record files, folders of them or ``.txt`` listings.

    Record batches hold ``batch_rows`` rows of one source file (its last batch fewer); a part ends at the first
    batch end past ``part_rows`` rows. ``workers`` > 1 parses and validates that many source files at a time in
    worker processes (the store is the same, byte for byte). ``report`` receives this run's problems and counts
    (a resumed run: the whole build's problems, from the manifest, plus what it re-read). ``progress(n)``
    is called with the rows of each batch. ``stop_after_parts`` ends the call after that many new parts (an
    interrupted build, for tests)."""
    if batch_rows < 1 or part_rows < batch_rows:
        raise ValueError(f"need 1 <= batch_rows <= part_rows, got {batch_rows} and {part_rows}")
    out = Path(out)
    report = report if report is not None else Report()
    files = source_files(sources)
    manifest = Manifest([str(s) for s in sources], [SourceFile.of(f) for f in files], batch_rows, part_rows)
    manifest = _prepare(out, manifest)
    earlier = Report(counts=Counter(manifest.problems), examples={k: list(v) for k, v in manifest.examples.items()})
    if manifest.complete:
        report.merge(earlier)
        report.count("records in store", manifest.rows)
        return manifest
    now = Report(strict=report.strict)
    writer: ipc.RecordBatchFileWriter | None = None
    part_rows_now, new_parts = 0, 0
    tmp = out / ".part.arrow.tmp"

    def commit(position: list[int]) -> None:
        nonlocal writer, part_rows_now, new_parts
        if writer is not None:
            writer.close()
            name = f"part-{len(manifest.parts):05d}.arrow"
            os.replace(tmp, out / name)
            manifest.parts.append(Part(name, part_rows_now, (out / name).stat().st_size, sha256(out / name)))
            writer, part_rows_now = None, 0
            new_parts += 1
        both = Report()
        both.merge(earlier)
        both.merge(now)
        manifest.problems, manifest.examples = dict(both.counts), both.examples
        manifest.position = position
        manifest.save(out)

    start = tuple(manifest.position)
    if workers > 1:
        batches = _converted_in_parallel(files, start, batch_rows, report.strict, workers, out / ".scratch")
    else:
        batches = (
            (k, *converted)
            for k in range(start[0], len(files))
            for converted in convert(files[k], k, start[1] if k == start[0] else 0, batch_rows, report.strict)
        )
    for k, batch, after, batch_report in batches:
        now.merge(batch_report)
        if batch.num_rows:
            if writer is None:
                writer = ipc.new_file(pa.OSFile(str(tmp), "wb"), SCHEMA)
            writer.write_batch(batch)
            part_rows_now += batch.num_rows
            if progress:
                progress(batch.num_rows)
        if part_rows_now >= part_rows:
            commit([k + 1, 0] if after == END else [k, after])
            if stop_after_parts is not None and new_parts >= stop_after_parts:
                batches.close()
                return manifest
    manifest.complete = True
    commit([len(files), 0])
    shutil.rmtree(out / ".scratch", ignore_errors=True)  # what a cut parallel build left
    tmp.unlink(missing_ok=True)
    report.merge(earlier)
    report.merge(now)
    report.count("records in store", manifest.rows)
    report.count("parts", len(manifest.parts))
    return manifest


def verify_store(folder: str | Path) -> list[str]:
    """Problems of a store, one line each (empty when it is sound): every part re-hashed and re-opened against
    the manifest, every source file that is still there re-fingerprinted. Raises :class:`StoreError` when
    ``folder`` is not a store of this schema version."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    problems = []
    if not manifest.complete:
        problems.append(f"{folder}: the build was interrupted after {len(manifest.parts)} parts: rerun the build")
    for part in manifest.parts:
        path = folder / part.name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != part.bytes:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {part.bytes} (truncated?)")
            continue
        if sha256(path) != part.sha256:
            problems.append(f"{path}: SHA-256 differs from the manifest (changed since the build)")
            continue
        try:
            with pa.memory_map(str(path)) as source:
                reader = ipc.open_file(source)
                rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
                if not reader.schema.equals(SCHEMA):
                    problems.append(f"{path}: not a FineHARD record part (foreign Arrow schema)")
                elif rows != part.rows:
                    problems.append(f"{path}: {rows} rows, the manifest says {part.rows}")
        except (pa.ArrowInvalid, OSError) as err:
            problems.append(f"{path}: not a readable Arrow IPC file ({err})")
    for source in manifest.files:
        path = Path(source.path)
        if path.is_file() and SourceFile.of(path) != source:
            problems.append(f"{path}: the source file differs from the one the store was built from")
    return problems
