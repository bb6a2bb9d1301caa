"""OpenAI CLIP's BPE as a transformers ``CLIPTokenizer``, built offline from the vocabulary file ``open_clip`` ships.

The vocabulary is the one OpenAI CLIP (and so Stable Diffusion 1.x / SDXL) uses: the 256 byte symbols, the same
with the end-of-word marker ``</w>``, the 48 894 merges in order, then ``<|startoftext|>`` (49406) and
``<|endoftext|>`` (49407). Padding uses ``<|endoftext|>``, as the tokenizer of Stable Diffusion 1.x does.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MERGES = 49152 - 256 - 2  # the merges OpenAI CLIP uses (the file holds more)


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in vocabulary order (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _bpe_file() -> Path:
    """open_clip's copy of the vocabulary, found without importing open_clip (its import takes seconds)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ImportError(
            "OpenAI CLIP's BPE vocabulary comes from open_clip: pip install 'fgclip-model[longclip]' (or pass a "
            "tokenizer)"
        )
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    with gzip.open(_bpe_file()) as file:
        lines = file.read().decode("utf-8").split("\n")[1 : MERGES + 1]
    byte_symbols = _byte_symbols()
    tokens = [*byte_symbols, *(s + "</w>" for s in byte_symbols), *("".join(m.split()) for m in lines), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, tuple(lines)


def clip_bpe_tokenizer(model_max_length: int = 248) -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer (ids as ``openai/clip-vit-large-patch14``), ``model_max_length`` tokens per text."""
    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=model_max_length,
    )
