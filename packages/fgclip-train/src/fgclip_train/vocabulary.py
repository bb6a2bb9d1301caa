"""``data.extend_vocabulary``: fine-tuning a checkpoint whose tokenizer is a word-level one (a model trained from
scratch, e.g. on FG-Shapes) on records with words it has never seen. Without it those words are all the unknown
token and no fine-tuning can tell "an apple" from "a cup".

The training records' new words are added to the tokenizer (:func:`fgclip_data.tokenizer.extend_word_tokenizer`),
the text tower's token-embedding table grows to hold them (new rows start at the mean embedding of the known
words) and trains in full — also under LoRA or a frozen text tower, where it would otherwise stay frozen and
every new word would keep the same vector. The extended tokenizer is saved with every checkpoint (the run's
tokenizer), so the checkpoint loads and benchmarks like any other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import nn

from fgclip_data.tokenizer import extend_word_tokenizer, tokenizer_model_type

from .preflight import RunError


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The text tower's token-embedding table (both FG-CLIP families: ``text_model.embeddings.token_embedding``)."""
    return model.text_model.embeddings.token_embedding


def grow_token_embeddings(model: nn.Module, new_ids: list[int]) -> nn.Embedding:
    """Give the rows ``new_ids`` of the token-embedding table the mean of the other rows, growing the table (and
    ``text_config.vocab_size``) when an id lies beyond it; the table then trains. Returns the table."""
    table = token_embedding(model)
    size = max([table.num_embeddings - 1, *new_ids]) + 1
    old = table.weight.detach()
    known = torch.ones(old.shape[0], dtype=torch.bool)
    known[[i for i in new_ids if i < old.shape[0]]] = False
    mean = old[known].mean(0) if bool(known.any()) else old.new_zeros(old.shape[1])
    weight = torch.cat([old, mean.expand(size - old.shape[0], -1)]) if size > old.shape[0] else old.clone()
    weight[new_ids] = mean
    grown = nn.Embedding(size, old.shape[1], padding_idx=table.padding_idx, dtype=old.dtype, device=old.device)
    with torch.no_grad():
        grown.weight.copy_(weight)
    model.text_model.embeddings.token_embedding = grown
    model.config.text_config.vocab_size = size
    grown.weight.requires_grad_(True)
    return grown


def extend_vocabulary(model: nn.Module, tokenizer, texts: Iterable[str], source: str, setting: bool | str = True):
    """The run's tokenizer with the words of ``texts`` (the training records' captions, region phrases and
    negatives) it lacks, and ``model``'s token embeddings grown to match (see the module docstring).

    ``setting`` is ``data.extend_vocabulary``: ``True`` refuses a subword tokenizer (it spells every word already)
    with a :class:`RunError` naming ``source`` (where the tokenizer came from); ``"auto"`` leaves it as it is."""
    if not setting or (setting == "auto" and tokenizer_model_type(tokenizer) != "WordLevel"):
        return tokenizer
    try:
        extended, new_ids = extend_word_tokenizer(tokenizer, texts)
    except ValueError as err:
        raise RunError(f"data.extend_vocabulary: {source}: {err}; run with --data.extend_vocabulary=false") from err
    if not new_ids:
        return tokenizer
    grow_token_embeddings(model, new_ids)
    if int(os.environ.get("RANK", "0")) == 0:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"[fgclip] vocabulary extended by {len(new_ids):,} words from the training records "
            f"({len(extended.get_vocab()):,} tokens); the token embeddings train: "
            f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f} %)",
            flush=True,
        )
    return extended
