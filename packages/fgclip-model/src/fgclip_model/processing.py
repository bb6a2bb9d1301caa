"""What every fgclip processor shares: a tokenizer with per-walk maximum lengths and an image processor."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BatchFeature


class WalkProcessor:
    """Tokenizer + image processor; text is lower-cased (as every reference caller does) and truncated to the
    walk's maximum length. Subclasses set ``max_lengths``, ``default_padding`` and ``image_processor_class``."""

    max_lengths: dict[str, int] = {}
    default_padding: bool | str = True
    image_processor_class: type | None = None

    def __init__(self, image_processor, tokenizer=None, max_lengths: dict[str, int] | None = None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_lengths = {**type(self).max_lengths, **(max_lengths or {})}

    @classmethod
    def default_image_processor(cls, image_size: int | None = None):
        return cls.image_processor_class()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, image_size: int | None = None, max_lengths: dict[str, int] | None = None, **_
    ):
        """Tokenizer and image processor saved in a checkpoint folder (defaults when absent); ``max_lengths``
        overrides the walks' token budgets (a model with other position tables than the released ones)."""
        path = Path(path)
        if (path / "preprocessor_config.json").is_file():
            image_processor = cls.image_processor_class.from_pretrained(path)
        else:
            image_processor = cls.default_image_processor(image_size)
        has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
        processor = cls(image_processor, tokenizer)
        processor.max_lengths.update(max_lengths or {})
        return processor

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def tokenize(
        self,
        text: str | Sequence[str],
        walk_type: str = "short",
        padding: bool | str | None = None,
        lowercase: bool = True,
    ) -> dict[str, torch.Tensor]:
        """``input_ids`` (and ``attention_mask`` when the tokenizer makes one), truncated to the walk's maximum."""
        if self.tokenizer is None:
            raise ValueError("this processor has no tokenizer (the checkpoint folder holds no tokenizer files)")
        if walk_type not in self.max_lengths:
            raise ValueError(f"walk_type must be one of {tuple(self.max_lengths)}, got {walk_type!r}")
        texts = [text] if isinstance(text, str) else list(text)
        encoded = self.tokenizer(
            [t.lower() for t in texts] if lowercase else texts,
            padding=self.default_padding if padding is None else padding,
            truncation=True,
            max_length=self.max_lengths[walk_type],
            padding_side="right",  # the layout the models were trained on, whatever the tokenizer's default
            return_tensors="pt",
        )
        return {k: encoded[k] for k in ("input_ids", "attention_mask") if k in encoded}

    def preprocess_images(self, images, **kwargs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images=None,
        walk_type: str = "short",
        padding: bool | str | None = None,
        lowercase: bool = True,
        return_tensors: str = "pt",
        **image_kwargs,
    ) -> BatchFeature:
        """Token ids for ``text`` and model inputs for ``images`` (either or both)."""
        data: dict[str, torch.Tensor] = {}
        if text is not None:
            data.update(self.tokenize(text, walk_type, padding, lowercase))
        if images is not None:
            data.update(self.preprocess_images(images, **image_kwargs))
        if not data:
            raise ValueError("pass text=, images= or both")
        return BatchFeature(data, tensor_type=return_tensors)
