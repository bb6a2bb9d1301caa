"""Extending a word-level tokenizer with the words of new data: known ids never move, new words get the next ids
(deterministic), the result survives save / load, a full id layout and a subword tokenizer are refused."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fgclip_data.tokenizer import build_word_tokenizer, extend_word_tokenizer, tokenizer_model_type

BASE = ["a red square left of a blue circle", "two green triangles"]
NEW = ["A red apple beside a cup.", "two apples", "a cup and an apple", "a cup"]


@pytest.mark.parametrize("family", ["fgclip2", "fgclip"])
def test_new_words_get_the_next_ids_and_known_ids_stay(family, tmp_path):
    base = build_word_tokenizer(BASE, family)
    extended, new_ids = extend_word_tokenizer(base, NEW)
    old_vocab, vocab = base.get_vocab(), extended.get_vocab()
    assert all(vocab[w] == i for w, i in old_vocab.items())  # nothing known moves
    added = {w: vocab[w] for w in set(vocab) - set(old_vocab)}
    assert set(added) == {"apple", "cup", "beside", ".", "apples", "and", "an"}
    assert sorted(added.values()) == new_ids
    assert min(new_ids) == max(i for i in old_vocab.values() if i not in base.all_special_ids) + 1
    order = ["cup", "apple", ".", "an", "and", "apples", "beside"]  # most frequent first, ties alphabetically
    assert sorted(added, key=added.get) == order
    ids = extended("A red apple beside a cup.")["input_ids"]
    assert extended.unk_token_id not in ids
    assert base.unk_token_id in base("A red apple beside a cup.")["input_ids"]
    assert extended.padding_side == base.padding_side  # FG-CLIP 2 pads on the left
    assert extend_word_tokenizer(base, NEW)[0].get_vocab() == vocab  # deterministic
    extended.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("A red apple beside a cup.")["input_ids"] == ids and loaded.padding_side == base.padding_side
    assert tokenizer_model_type(loaded) == "WordLevel"
    # extending again with nothing new changes nothing
    again, more = extend_word_tokenizer(loaded, NEW)
    assert more == [] and again.get_vocab() == vocab


def test_a_full_clip_id_layout_is_refused():
    base = build_word_tokenizer(BASE, "fgclip")
    many = [" ".join(f"w{i}" for i in range(j, j + 1000)) for j in range(0, 49_400, 1000)]
    with pytest.raises(ValueError, match="id 49406 is taken"):
        extend_word_tokenizer(base, many)


def test_a_subword_tokenizer_is_refused():
    bpe = Tokenizer(models.BPE(vocab={"<unk>": 0, "a": 1, "b": 2, "ab": 3}, merges=[("a", "b")], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    assert tokenizer_model_type(tokenizer) == "BPE"
    with pytest.raises(ValueError, match="BPE tokenizer, not a word-level one"):
        extend_word_tokenizer(tokenizer, NEW)
