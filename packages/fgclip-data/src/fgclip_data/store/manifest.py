"""What a store holds (``manifest.json``): its parts, counts, the bad-record report and the sources it came from.

Source files are fingerprinted by their size and the SHA-256 of their first and last MiB: O(1) per file (a
12 M-record FineHARD is tens of GB of JSON), and it catches a file that was replaced, truncated, appended to or
edited at either end. It ignores mtime (a copied corpus keeps its fingerprint) and an edit that keeps the size
and both ends; ``fgclip-data store verify`` re-hashes the parts in full and re-fingerprints the sources.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fgclip_data.report import DataError

MANIFEST = "manifest.json"
FORMAT = "fgclip-store"
SCHEMA_VERSION = 2
_EDGE = 1 << 20


class StoreError(DataError):
    """A store that cannot be used as it is (truncated, foreign, another schema version, other sources); the
    message names the store file and the fix."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.reason, self.file, self.record, self.field = message, None, None, None

    def __reduce__(self):
        return (type(self), (self.reason,))


def fingerprint(path: Path) -> str:
    """SHA-256 of the size and the first and last MiB of ``path`` (see the module docstring)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            digest.update(f.read(_EDGE))
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SourceFile:
    """A record file the store was built from: its path as given, size and fingerprint."""

    path: str
    size: int
    fingerprint: str

    @classmethod
    def of(cls, path: Path) -> SourceFile:
        return cls(str(path), path.stat().st_size, fingerprint(path))


@dataclass
class Part:
    """One Arrow IPC file of the store: its rows, bytes and SHA-256."""

    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """``position`` is where the build stopped reading: (source file number, raw records of it consumed).
    ``problems`` / ``examples`` are the bad-record report (by kind) of the records up to ``position``."""

    sources: list[str]
    files: list[SourceFile]
    batch_rows: int
    part_rows: int
    parts: list[Part] = field(default_factory=list)
    position: list[int] = field(default_factory=lambda: [0, 0])
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    complete: bool = False
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def save(self, folder: Path) -> None:
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False))
        os.replace(tmp, folder / MANIFEST)

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The manifest of ``folder``; a :class:`StoreError` (one line) when it is not a store of this version."""
        path = Path(folder) / MANIFEST
        if not Path(folder).is_dir():
            raise StoreError(f"{folder}: no such store (not a folder)")
        if not path.is_file():
            raise StoreError(f"{folder}: not a record store (no {MANIFEST}); build one with `fgclip-data store build`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError(f"{path}: not a store manifest (unreadable JSON: {err})") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise StoreError(f"{path}: not a record store manifest (format {found!r}, expected {FORMAT!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: store schema version {data.get('schema_version')!r}, this fgclip-data reads version "
                f"{SCHEMA_VERSION}: rebuild the store with `fgclip-data store build`"
            )
        try:
            data["files"] = [SourceFile(**f) for f in data["files"]]
            data["parts"] = [Part(**p) for p in data["parts"]]
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise StoreError(f"{path}: damaged store manifest ({err})") from err


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a folder that holds a store manifest (of any version: opening it tells more)."""
    return (Path(path) / MANIFEST).is_file()
