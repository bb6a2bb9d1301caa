"""Decoding images from untrusted files: every way a file can be bad is one :class:`BadImage` with a reason kind.

Pillow refuses images whose header declares more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485 by
default, so 178,956,970) with ``DecompressionBombError``, which is not an ``OSError``; here it is a bad image like a
truncated one (reason :data:`BOMB`). Images between the limit and twice it decode; a JPEG that
large is decoded at a reduced scale (``Image.draft``) when the caller says how small it will be resized.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DRAFT_ABOVE = 16_000_000  # pixels: JPEGs larger than this are decoded at a reduced scale when a target is given

MISSING = "missing image"
BOMB = "image over the pixel limit (decompression bomb)"


class BadImage(ValueError):
    """An image that cannot be used; ``reason`` is its kind (the same string for every file with that problem)."""

    def __init__(self, reason: str, source: str) -> None:
        self.reason, self.source = reason, source
        super().__init__(f"{reason}: {source}")


def decode_rgb(source: str | Path | bytes, target: int | None = None, name: str | None = None) -> Image.Image:
    """The image as RGB; ``source`` is a path or the file's bytes (``name`` says where they came from).

    ``target``: the side the caller will resize to; very large JPEGs are then decoded at the smallest scale that
    still covers it. Raises :class:`BadImage` for missing, undecodable, truncated and over-limit images.
    """
    label = name or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # legal sizes between limit and 2x
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                if target and image.format == "JPEG" and image.width * image.height > DRAFT_ABOVE:
                    image.draft("RGB", (target, target))
                return image.convert("RGB")
    except FileNotFoundError as err:
        raise BadImage(MISSING, label) from err
    except Image.DecompressionBombError as err:
        raise BadImage(BOMB, label) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise BadImage(f"corrupt image ({type(err).__name__})", label) from err
