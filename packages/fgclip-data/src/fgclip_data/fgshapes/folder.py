"""An FG-Shapes folder as a typed handle (records, images, vocabulary), and the one cache location of the
project (``$FGCLIP_CACHE``, default ``~/.cache/fgclip``) where commands generate it on first use."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """``$FGCLIP_CACHE`` (read at each call, so a changed environment is seen), else ``~/.cache/fgclip``."""
    return Path(os.environ.get("FGCLIP_CACHE", Path.home() / ".cache" / "fgclip"))


@dataclass(frozen=True)
class FGShapesFolder:
    """A folder written by ``fgclip-data fgshapes generate`` (FineHARD's own layout)."""

    root: Path

    @property
    def manifest_file(self) -> Path:
        return self.root / MANIFEST

    @property
    def train(self) -> Path:
        return self.root / "jsonfiles" / "train"

    @property
    def val(self) -> Path:
        return self.root / "jsonfiles" / "val"

    @property
    def train_cn(self) -> Path:
        return self.root / "jsonfiles" / "train_cn"

    @property
    def images(self) -> Path:
        return self.root / "grit-12m"

    @cached_property
    def manifest(self) -> dict:
        return json.loads(self.manifest_file.read_text())

    @property
    def vocabulary(self) -> dict:
        """Colours, shapes, sizes and positions the captions are made of."""
        return self.manifest["vocabulary"]

    def exists(self) -> bool:
        return self.manifest_file.is_file()

    @classmethod
    def cached(cls, n: int, seed: int = 0, lang: str = "en") -> FGShapesFolder:
        """The cache's folder for a set of ``n`` images (it may not be generated yet)."""
        return cls(cache_dir() / f"fgshapes-n{n}-s{seed}-{lang}")

    @classmethod
    def in_cache(cls) -> list[FGShapesFolder]:
        """The generated sets in the cache, in name order."""
        return [cls(p.parent) for p in sorted(cache_dir().glob(f"fgshapes-*/{MANIFEST}"))]

    @classmethod
    def locate(cls, path: str | os.PathLike) -> FGShapesFolder | None:
        """``path`` itself or its ``fgshapes/`` child, whichever holds a manifest (None when neither does)."""
        for candidate in (Path(path), Path(path) / "fgshapes"):
            if (candidate / MANIFEST).is_file():
                return cls(candidate)
        return None
