"""A word-level tokenizer built from a corpus (FG-Shapes), in the special-token layout of each model family, and
extended later with the words of new data (fine-tuning a checkpoint on records it has no words for).

For training (``stage2``, ``finetune``) and evaluating models built from scratch on FG-Shapes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

CLIP_VOCAB = 49408


@dataclass(frozen=True)
class TokenLayout:
    """A family's special tokens and how its texts are framed and padded.

    ``specials``: role (``pad``, ``eos``, ``bos``, ``unk``) -> (token, id); ``frame``: the special roles around
    the words; ``pad``: the role that pads; ``vocab``: a fixed vocabulary size (word ids stay below the first
    special id), or ``None`` for the corpus vocabulary after the specials.
    """

    specials: dict[str, tuple[str, int]]  # ids of 1000 and above sit after the words (CLIP's BOS / EOS)
    frame: tuple[str, ...]  # e.g. ("bos", "$A", "eos")
    pad: str
    padding_side: str
    vocab: int | None = None


# FG-CLIP 2 checkpoints use Gemma's ids; FG-CLIP v1 pools the first 49407 (CLIP's EOS) in a 49408-token vocab
LAYOUTS: dict[str, TokenLayout] = {
    "fgclip2": TokenLayout(
        {"pad": ("<pad>", 0), "eos": ("<eos>", 1), "bos": ("<bos>", 2), "unk": ("<unk>", 3)},
        frame=("$A", "eos"),
        pad="pad",
        padding_side="left",
    ),
    "fgclip": TokenLayout(
        {"unk": ("<unk>", 0), "bos": ("<|startoftext|>", 49406), "eos": ("<|endoftext|>", 49407)},
        frame=("bos", "$A", "eos"),
        pad="eos",
        padding_side="right",
        vocab=CLIP_VOCAB,
    ),
}


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # whitespace, punctuation, and every CJK character on its own
    return pre_tokenizers.BertPreTokenizer()


def corpus_words(texts: Iterable[str]) -> Counter:
    """How often each word occurs in ``texts`` (each distinct text is split once: region phrases repeat)."""
    pre = _pre_tokenizer()
    norm = normalizers.Lowercase()
    counts: Counter = Counter()
    for text, n in Counter(texts).items():
        for piece, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[piece] += n
    return counts


def build_word_tokenizer(texts: Iterable[str], family: str, min_count: int = 1) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the words of ``texts``.

    FG-CLIP 2 layout: pad 0, eos 1, bos 2, unk 3, EOS appended, **padded on the left**: FG-CLIP 2 pools the
    last position, which right padding fills with a pad token whose features are the same for every text — a
    model trained from scratch then collapses its text embeddings. Left padding puts the EOS there, which
    attends to every word (CLIP's EOS pooling). FG-CLIP v1 layout: BOS 49406 + words + EOS 49407, padded with
    EOS on the right (v1 pools the first EOS), ids below 49406 for words.
    """
    layout = LAYOUTS[family]
    specials = layout.specials
    vocab = {tok: idx for tok, idx in specials.values()}
    next_id = max((i for i in vocab.values() if i < 1000), default=-1) + 1
    for word, n in sorted(corpus_words(texts).items(), key=lambda kv: (-kv[1], kv[0])):
        if n >= min_count and word not in vocab:
            vocab[word] = next_id
            next_id += 1
    if layout.vocab is not None and next_id >= min(i for _, i in specials.values() if i >= 1000):
        raise ValueError("corpus vocabulary too large for the CLIP id layout")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk"][0]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    framed = [piece if piece == "$A" else specials[piece][0] for piece in layout.frame]
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(framed), special_tokens=[specials[p] for p in layout.frame if p != "$A"]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=specials["unk"][0],
        bos_token=specials["bos"][0],
        eos_token=specials["eos"][0],
        pad_token=specials[layout.pad][0],
        padding_side=layout.padding_side,
        truncation_side="right",
    )


def vocab_size(tokenizer, family: str) -> int:
    """The vocabulary size a model needs for ``tokenizer`` in the ``family`` layout."""
    return LAYOUTS[family].vocab or max(tokenizer.get_vocab().values()) + 1


def tokenizer_model_type(tokenizer) -> str:
    """The ``tokenizers`` model of a fast tokenizer: ``WordLevel`` (:func:`build_word_tokenizer`), ``BPE``,
    ``Unigram``, ``WordPiece`` ...; ``slow`` for a tokenizer without a ``tokenizers`` backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "slow"
    return json.loads(backend.to_str())["model"]["type"]


def extend_word_tokenizer(tokenizer, texts: Iterable[str], min_count: int = 1) -> tuple[PreTrainedTokenizerFast, list]:
    """``tokenizer`` (a word-level one, :func:`build_word_tokenizer`) with the words of ``texts`` it lacks added,
    most frequent first (ties alphabetically: the result depends only on the texts), and the new words' ids.

    New ids follow the highest word id; an id already taken (FG-CLIP v1's BOS 49406 above the words) means the id
    layout is full and raises ValueError. Normaliser, pre-tokeniser, template, special tokens and padding side are
    kept. A subword tokenizer (BPE, Unigram, WordPiece) raises ValueError: it spells any word already."""
    kind = tokenizer_model_type(tokenizer)
    if kind != "WordLevel":
        raise ValueError(f"the tokenizer is a {kind} tokenizer, not a word-level one: it has no words to add")
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    special = set(tokenizer.all_special_ids)
    taken = set(vocab.values())
    next_id = max((i for i in taken if i not in special), default=max(taken, default=-1)) + 1
    new_ids = []
    for word, n in sorted(corpus_words(texts).items(), key=lambda kv: (-kv[1], kv[0])):
        if n < min_count or word in vocab:
            continue
        if next_id in taken:
            raise ValueError(f"no free token id for {word!r}: id {next_id} is taken (the id layout is full)")
        vocab[word] = next_id
        new_ids.append(next_id)
        next_id += 1
    extended = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        **{name: getattr(tokenizer, name) for name in ("unk_token", "bos_token", "eos_token", "pad_token")},
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        model_max_length=tokenizer.model_max_length,
    )
    return extended, new_ids
