"""FineHARD paths: ``f_path`` -> the image under ``grit-12m/``, and safe joins."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

# every FineHARD f_path starts with this; the rest is coyo_image_{i}/{k:05d}/{key}.jpg under the image root
FINEHARD_PREFIX = "grit-20m/data-12m/"


def resolve_image_path(f_path: str, image_root: str | Path) -> Path:
    """The image file of a record: ``f_path`` without the ``grit-20m/data-12m/`` prefix, under ``image_root``.

    Raises ``ValueError`` for absolute paths or paths that would leave the image root.
    """
    relative = f_path.split(FINEHARD_PREFIX, 1)[1] if FINEHARD_PREFIX in f_path else f_path
    return safe_join(image_root, relative)


def safe_join(root: str | Path, relative: str) -> Path:
    """``root / relative`` for a relative path that stays inside ``root`` (no absolute paths, no ``..``)."""
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"path {relative!r} would escape {root}")
    return Path(root).joinpath(*rel.parts)
