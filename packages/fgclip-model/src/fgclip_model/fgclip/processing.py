"""FG-CLIP v1 input processing: the reference's square squash + CLIP normalisation, and walk-aware tokenisation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, CLIPImageProcessor

MAX_LENGTH = {"short": 77, "box": 77, "long": 248}


def squash(image: Image.Image | np.ndarray, size: int) -> Image.Image:
    """RGB, resized to ``size x size`` with bicubic filtering, aspect ratio *not* kept (as every FG-CLIP caller
    does, so normalised box coordinates stay valid on the model input)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"images must be PIL images or HxWxC uint8 arrays, got {type(image).__name__}")
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


class FGCLIPProcessor:
    """Tokenizer (``CLIPTokenizer``) + ``CLIPImageProcessor`` with FG-CLIP's conventions.

    * images are squashed to ``image_size`` (224 base, 336 large), then rescaled and normalised with the
      OpenAI CLIP mean / std — no centre crop;
    * text is lower-cased (the CLIP tokenizer does it) and truncated to the walk's maximum (77 for short / box,
      248 for long); padding is to the longest text by default — the model pools the first EOS under a causal
      mask, so padding never changes the result.
    """

    def __init__(self, image_processor: CLIPImageProcessor, tokenizer=None, image_size: int | None = None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        size = image_processor.crop_size or image_processor.size or {}
        self.image_size = image_size or size.get("height") or size.get("shortest_edge") or 224

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, image_size: int | None = None) -> FGCLIPProcessor:
        """Tokenizer and image processor saved in a checkpoint folder (OpenAI CLIP defaults when absent)."""
        path = Path(path)
        if (path / "preprocessor_config.json").is_file():
            image_processor = CLIPImageProcessor.from_pretrained(path)
        else:
            size = image_size or 224
            image_processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
        return cls(image_processor, tokenizer, image_size)

    from_pretrained = from_checkpoint

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray] | None = None,
        walk_type: str = "short",
        padding: bool | str = True,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """``input_ids`` / ``attention_mask`` for ``text`` and ``pixel_values`` for ``images``."""
        data: dict[str, torch.Tensor] = {}
        if text is not None:
            data.update(self.tokenize(text, walk_type, padding))
        if images is not None:
            data["pixel_values"] = self.preprocess_images(images)
        if not data:
            raise ValueError("pass text=, images= or both")
        return BatchFeature(data, tensor_type=return_tensors)

    def tokenize(self, text: str | Sequence[str], walk_type: str = "short", padding: bool | str = True) -> dict:
        if self.tokenizer is None:
            raise ValueError("this processor has no tokenizer (the checkpoint folder holds no tokenizer files)")
        if walk_type not in MAX_LENGTH:
            raise ValueError(f"walk_type must be one of {tuple(MAX_LENGTH)}, got {walk_type!r}")
        texts = [text] if isinstance(text, str) else list(text)
        encoded = self.tokenizer(
            [t.lower() for t in texts],
            padding=padding,
            truncation=True,
            max_length=MAX_LENGTH[walk_type],
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def preprocess_images(self, images) -> torch.Tensor:
        batch = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
        squashed = [squash(im, self.image_size) for im in batch]
        out = self.image_processor(squashed, do_resize=False, do_center_crop=False, return_tensors="pt")
        return out["pixel_values"]
