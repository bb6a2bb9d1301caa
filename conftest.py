"""Shared pytest fixtures: golden reference fixtures and small offline-built tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parent
GOLDEN = ROOT / "tests" / "fixtures" / "golden"


@pytest.fixture(scope="session")
def golden() -> Path:
    """Folder of the golden reference fixtures (copied from shared/golden; see its README for tolerances)."""
    return GOLDEN


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@pytest.fixture(scope="session")
def clip_tokenizer():
    """A CLIP BPE tokenizer built offline: byte-level characters (with and without ``</w>``), a few merges, and
    the OpenAI special ids (bos 49406, eos/pad 49407), so its ids fit the 49408-token golden models."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = 49406
    vocab["<|endoftext|>"] = 49407
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="session")
def gemma_like_tokenizer():
    """A word-level fast tokenizer with Gemma's special ids (pad 0, eos 1, bos 2, unk 3) that appends EOS, built
    offline; enough to exercise FG-CLIP 2's processor (the real checkpoints ship a 256k Gemma tokenizer)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = "a an the of and two three red green blue small big square circle triangle photo left right above below"
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in words.split():
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A 60-byte PNG whose header declares 30000 x 30000 pixels (9e8: five times Pillow's refusal limit)."""
    import struct
    import zlib

    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(b"\x00")) + _png_chunk(b"IEND", b"")


class WritesMarker:
    """Unpickling this would create ``path``: the proof that a loader ran code from a file."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def plant_pickle():
    """``plant_pickle(file, marker, key)``: write ``{key: <object whose unpickling creates marker>}`` with torch."""

    def plant(file, marker, key: str = "optimizer_state_dict") -> None:
        import torch

        torch.save({key: WritesMarker(marker)}, file)

    return plant
