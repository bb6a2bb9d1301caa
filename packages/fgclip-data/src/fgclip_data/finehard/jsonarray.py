"""The elements of a top-level JSON array, streamed: decoded chunk by chunk with the C ``json`` scanner (memory: a
chunk and one element), integers of any size kept exact (``ijson``'s C backend stops at int64), NaN / Infinity
refused as JSON does."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 22
MAX_RECORD = 1 << 26  # no record is 64 MiB: an element that does not decode by then is malformed


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: not JSON, a malformed array


def array_elements(path: Path) -> Iterator[object]:
    """The elements of a top-level JSON array, decoded chunk by chunk (memory: a chunk and one element);
    raises ValueError (UnicodeDecodeError, JSONDecodeError) where the array is malformed."""
    decoder, utf8 = json.JSONDecoder(parse_constant=_no_constant), codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        text, pos, eof = "", 0, False

        def more() -> None:
            nonlocal text, pos, eof
            block = f.read(CHUNK)
            eof = not block
            text = text[pos:] + utf8.decode(block, final=eof)
            pos = 0

        def skip_space() -> None:
            nonlocal pos
            while True:
                while pos < len(text) and text[pos] in " \t\r\n":
                    pos += 1
                if pos < len(text) or eof:
                    return
                more()

        more()
        skip_space()
        if text[pos : pos + 1] != "[":
            raise ValueError("not a JSON array")
        pos += 1
        skip_space()
        if text[pos : pos + 1] == "]":
            pos += 1
        else:
            while True:
                while True:
                    try:
                        value, end = decoder.raw_decode(text, pos)
                    except json.JSONDecodeError:
                        if eof or len(text) - pos > MAX_RECORD:
                            raise
                        more()
                        continue
                    if end == len(text) and not eof:  # a number may go on in the next chunk
                        more()
                        continue
                    break
                pos = end
                yield value
                skip_space()
                separator = text[pos : pos + 1]
                pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    raise ValueError("expected , or ] between array elements")
                skip_space()
        skip_space()
        if pos < len(text):
            raise ValueError("data after the end of the array")
