"""WebDataset tar shards of FineHARD-format data (FineHARD, FG-Shapes, converted ShareGPT4V), and a stream over them.

Millions of loose JPEG files and JSON arrays do not feed a GPU cluster; sequential reads of a few hundred tar files
do. Each sample is two tar members with one key: ``<key>.<ext>`` (the original image bytes, never re-encoded) and
``<key>.json`` (the record). ``manifest.json`` lists every shard with its sample count, size and SHA-256.

Writing is resumable: shards are written to a temporary name and renamed when complete, and the manifest is
rewritten after each one, so a rerun skips the shards it lists (after checking their size) and continues.
Missing or corrupt images, and records no sample can be built from (``finehard.samples.unusable``: the rule the
readers apply), are skipped and counted, never written.

Reading (:class:`ShardStream`) splits samples, not shards, over ranks × loader workers: consumer ``c`` of ``C``
takes the samples at positions ``c, c + C, ...`` of the epoch's order (shards shuffled per epoch), so each
sample is read exactly once per epoch whatever the shard count. Tar members of other consumers are skipped
without reading their data. An optional shuffle buffer mixes each consumer's samples across neighbouring shards
(seeded by seed, epoch and consumer, so a resumed epoch replays the same order). Decoding, resizing and sample
building happen in the workers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from fgclip_data.finehard.paths import resolve_image_path
from fgclip_data.finehard.reader import iter_records
from fgclip_data.finehard.samples import Skipped, unusable
from fgclip_data.images import MISSING, BadImage, decode_rgb
from fgclip_data.report import Report, where
from fgclip_data.schema import FineHARDRecord
from fgclip_data.sharding import shard_of

MANIFEST = "manifest.json"
FORMAT = "fgclip-shards/1"


@dataclass
class ShardInfo:
    name: str
    count: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What a shard folder holds; ``source`` and ``shard_size`` must match for a resumed write."""

    source: str
    shard_size: int
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    records_read: int = 0
    complete: bool = False
    format: str = FORMAT

    @property
    def samples(self) -> int:
        return sum(s.count for s in self.shards)

    def save(self, folder: Path) -> None:
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, folder / MANIFEST)

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: write shards with `fgclip-data shards write`")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
        data["shards"] = [ShardInfo(**s) for s in data["shards"]]
        return cls(**data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _image_bytes(path: Path, report: Report, at: str) -> tuple[bytes, str] | None:
    """The file's bytes and extension if it decodes, else None (counted by kind)."""
    try:
        data = path.read_bytes()
        decode_rgb(data, name=str(path))
    except FileNotFoundError:
        report.problem(MISSING, at)
        return None
    except BadImage as err:
        report.problem(err.reason, at)
        return None
    return data, (path.suffix.lower().lstrip(".") or "jpg").replace("jpeg", "jpg")


def write_shards(
    source: str | Path,
    image_root: str | Path,
    out: str | Path,
    shard_size: int = 1000,
    report: Report | None = None,
    progress: Callable[[int], None] | None = None,
    stop_after_shards: int | None = None,
) -> Manifest:
    """Write ``source`` (record files, a folder of them or a .txt listing) as shards of ``shard_size`` samples in
    ``out``; resume when ``out`` already holds a manifest of the same source and shard size.
    ``stop_after_shards`` ends the call after that many new shards (an interrupted run, for tests)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = report if report is not None else Report()
    manifest = _start_manifest(out, Manifest(str(Path(source).resolve()), shard_size))
    if manifest.complete:
        return manifest
    writer = _ShardWriter(out, manifest, progress)
    records = iter_records(source, report)
    for _ in range(manifest.records_read):  # records already in the listed shards (or skipped before them)
        next(records, None)
    for ref in records:
        writer.read += 1
        image = _sample_image(ref, image_root, writer.skipped)
        if image is not None:
            writer.pending.append((ref.record, *image))
        if len(writer.pending) == shard_size:
            writer.flush()
            if stop_after_shards is not None and writer.written >= stop_after_shards:
                return manifest
    writer.finish(report)
    return manifest


def _start_manifest(out: Path, fresh: Manifest) -> Manifest:
    """The manifest to continue in ``out``: ``fresh`` in a folder without one (which must hold nothing but this
    command's temporary files), else the folder's own — of the same source and shard size, its shards intact."""
    if not (out / MANIFEST).is_file():
        foreign = sorted(p.name for p in out.iterdir() if not (p.name.startswith(".shard-") and p.suffix == ".tmp"))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ValueError(
                f"{out} is not empty and holds no {MANIFEST} ({shown}): these are not shards this command wrote, "
                "so it will not write beside them; choose an empty folder"
            )
        return fresh
    previous = Manifest.load(out)
    if (previous.source, previous.shard_size) != (fresh.source, fresh.shard_size):
        raise ValueError(
            f"{out} holds shards of {previous.source} (size {previous.shard_size}); "
            f"refusing to mix in {fresh.source} (size {fresh.shard_size}): choose another folder"
        )
    for info in previous.shards:
        path = out / info.name
        if not path.is_file() or path.stat().st_size != info.bytes:
            raise ValueError(f"{path} does not match the manifest (missing or resized): remove the folder")
    return previous


def _sample_image(ref, image_root: str | Path, skipped: Report) -> tuple[bytes, str] | None:
    """(encoded bytes, extension) of a record's image, or ``None`` with the problem counted in ``skipped`` — also
    for a record the readers would skip (``unusable``: the one sample rule), which is never packed."""
    problem = unusable(ref.record)
    if problem is not None:
        skipped.problem(problem[0], ref.file, ref.index, problem[1])
        return None
    try:
        path = resolve_image_path(ref.record.f_path, image_root)
    except ValueError:
        skipped.problem("f_path outside the image root", ref.file, ref.index, "f_path")
        return None
    return _image_bytes(path, skipped, where(ref.file, ref.index))


class _ShardWriter:
    """Pending samples -> numbered tar shards in ``out``, each written atomically and recorded in the manifest
    with the records read and the problems counted so far (this run's on top of the manifest's earlier ones)."""

    def __init__(self, out: Path, manifest: Manifest, progress: Callable[[int], None] | None) -> None:
        self.out, self.manifest, self.progress = out, manifest, progress
        self.pending: list[tuple[FineHARDRecord, bytes, str]] = []
        self.read = manifest.records_read
        self.written = 0  # shards written by this run
        self.skipped = Report()
        self.earlier = dict(manifest.skipped)

    def _tally(self) -> None:
        earlier, now = self.earlier, self.skipped.counts
        self.manifest.skipped = {r: earlier.get(r, 0) + now.get(r, 0) for r in {*earlier, *now}}
        self.manifest.records_read = self.read

    def flush(self) -> None:
        import webdataset as wds

        index = len(self.manifest.shards)
        name = f"shard-{index:06d}.tar"
        tmp = self.out / f".{name}.tmp"
        with tmp.open("wb") as stream, wds.TarWriter(stream, encoder=False, mtime=0) as writer:
            for offset, (record, data, ext) in enumerate(self.pending):
                key = f"{index:06d}{offset:06d}"
                writer.write({"__key__": key, ext: data, "json": record.model_dump_json().encode()})
        path = self.out / name
        os.replace(tmp, path)
        self.manifest.shards.append(ShardInfo(name, len(self.pending), path.stat().st_size, _sha256(path)))
        self._tally()
        self.manifest.save(self.out)
        self.written += 1
        self.pending = []
        if self.progress:
            self.progress(self.manifest.samples)

    def finish(self, report: Report) -> None:
        """The last partial shard, the manifest marked complete, the run's counts merged into ``report``."""
        if self.pending:
            self.flush()
        self._tally()
        self.manifest.complete = True
        self.manifest.save(self.out)
        report.merge(self.skipped)
        report.count("samples in shards", self.manifest.samples)
        report.count("shards", len(self.manifest.shards))


def verify_shards(folder: str | Path) -> list[str]:
    """Problems found re-hashing every shard against the manifest (empty when all match)."""
    folder = Path(folder)
    problems = []
    for info in Manifest.load(folder).shards:
        path = folder / info.name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif _sha256(path) != info.sha256:
            problems.append(f"{path}: SHA-256 differs from the manifest")
    return problems


def iter_shard_records(folder: str | Path) -> Iterator[FineHARDRecord]:
    """The records of a shard folder in shard order, without reading any image data."""
    folder = Path(folder)
    for info in Manifest.load(folder).shards:
        with tarfile.open(folder / info.name) as tar:
            for _, _, json_member in _samples(tar):
                yield FineHARDRecord.model_validate_json(tar.extractfile(json_member).read())


class ShardStream(IterableDataset):
    """Samples of a shard folder, split over ranks × loader workers (see the module docstring).

    ``make(record, image, at)`` turns a record and its decoded image into the training sample (e.g. fgclip-data's
    ``Sample`` builder); None yields ``(record, image)``. :meth:`resume` skips what a run already consumed.
    ``shuffle_buffer`` > 1 draws each consumer's next sample at random from a buffer of that many (their encoded
    bytes: about the mean image size × the buffer, per worker).
    """

    def __init__(
        self,
        folder: str | Path,
        make: Callable[[FineHARDRecord, Image.Image, str], object] | None = None,
        seed: int = 0,
        shuffle_shards: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 0,
    ) -> None:
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        if not self.manifest.complete:
            raise ValueError(
                f"{self.folder}: the shard set is incomplete (its write was interrupted after "
                f"{len(self.manifest.shards)} shards); run `fgclip-data shards write` again to finish it"
            )
        self.make = make
        self.seed, self.shuffle_shards, self.shuffle_buffer = seed, shuffle_shards, shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip_batches, self.batch_size = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Continue epoch ``epoch`` after ``batches_done`` batches of ``batch_size`` of this rank's loader.

        torch's DataLoader takes batches from its workers in turn, starting with worker 0; a resumed loader
        starts there again, so the workers' roles are rotated to make its first batch the one the interrupted
        loader would have delivered next: the batches then come in the uninterrupted order (each worker's last
        partial batch dropped, as ``drop_last`` does)."""
        self.epoch, self.skip_batches, self.batch_size = epoch, batches_done, batch_size

    def __len__(self) -> int:
        return self.manifest.samples

    def shard_order(self) -> list[ShardInfo]:
        shards = list(self.manifest.shards)
        if self.shuffle_shards:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(shards)
        return shards

    def _consumer(self) -> tuple[int, int, int, int]:
        """(consumer index, consumer count, worker role, worker count); the role is the loader worker's index
        rotated by the batches a resumed epoch skips (see :meth:`resume`)."""
        consumer, consumers = shard_of(self.rank, self.world_size)  # rank × workers + worker
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        role = (worker + self.skip_batches) % workers
        return consumer - worker + role, consumers, role, workers

    def consumer_samples(self, consumer: int, consumers: int) -> int:
        """How many samples consumer ``consumer`` of ``consumers`` reads per epoch (the same every epoch)."""
        return len(range(consumer, self.manifest.samples, consumers))

    def __iter__(self) -> Iterator:
        consumer, consumers, worker, workers = self._consumer()
        own_batches = self.skip_batches // workers + (worker < self.skip_batches % workers)
        entries = self._entries(consumer, consumers)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}:{self.epoch}:{consumer}")
            entries = _buffer_shuffled(entries, self.shuffle_buffer, rng)
        for at, record_bytes, image_bytes in itertools.islice(entries, own_batches * self.batch_size, None):
            try:
                record = FineHARDRecord.model_validate_json(record_bytes)
            except ValueError:  # pydantic's ValidationError: a shard written elsewhere, or damaged since
                yield Skipped("invalid record in shard", at)
                continue
            try:
                image = decode_rgb(image_bytes, name=at)
            except BadImage as err:  # a shard written elsewhere, or damaged since: the sample is skipped, counted
                yield Skipped(err.reason, at)
                continue
            yield self.make(record, image, at) if self.make else (record, image)

    def _entries(self, consumer: int, consumers: int) -> Iterator[tuple[str, bytes, bytes]]:
        """(where, record JSON, image bytes) of this consumer's samples in the epoch's shard order."""
        position = 0
        for info in self.shard_order():
            with tarfile.open(self.folder / info.name) as tar:
                for key, image_member, json_member in _samples(tar):
                    mine = position % consumers == consumer
                    position += 1
                    if mine:
                        record = tar.extractfile(json_member).read()
                        yield f"{info.name}:{key}", record, tar.extractfile(image_member).read()


def _buffer_shuffled(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """``items`` in a random order: each output is drawn from a buffer of the next ``size`` inputs."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def _samples(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarInfo]]:
    """(key, image member, json member) in file order; member data is only read on extractfile."""
    current: dict[str, tarfile.TarInfo] = {}
    key = None
    for member in tar:
        stem, _, ext = member.name.partition(".")
        if key is not None and stem != key:
            yield _pair(key, current)
            current = {}
        key = stem
        current[ext] = member
    if key is not None:
        yield _pair(key, current)


def _pair(key: str, members: dict[str, tarfile.TarInfo]):
    image = next((m for ext, m in members.items() if ext != "json"), None)
    if image is None or "json" not in members:
        raise ValueError(f"sample {key}: expected an image and a .json member, found {sorted(members)}")
    return key, image, members["json"]
