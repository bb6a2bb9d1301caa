"""Long-CLIP input processing, exactly as the original ``longclip.load`` / ``longclip.tokenize``.

* images: torchvision ``Resize(short side -> size, bicubic)`` on the PIL image, ``CenterCrop(size)``, RGB,
  ``ToTensor``, OpenAI CLIP mean / std (transformers' ``CLIPImageProcessor`` resizes with torch in transformers 5,
  which gives different pixels);
* text: OpenAI CLIP's byte-level BPE (ftfy, double HTML unescape, whitespace collapse, lower case),
  ``[SOT] + tokens + [EOT]`` zero-padded, and text longer than the context truncated with its last token replaced
  by EOT (``truncate=True``). The BPE comes from ``open_clip`` (extra ``fgclip-model[longclip]``), which ships the
  same vocabulary file and algorithm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor

from fgclip_model.processing import WalkProcessor

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")  # after the crop, as Long-CLIP's transform


class LongCLIPImageTransform:
    """The Long-CLIP / OpenAI CLIP image transform (resize the short side, centre crop, normalise)."""

    def __init__(self, size: int = 224) -> None:
        from torchvision import transforms

        self.size = size
        self.transform = transforms.Compose(
            [
                transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(size),
                _to_rgb,
                transforms.ToTensor(),
                transforms.Normalize(OPENAI_MEAN, OPENAI_STD),
            ]
        )

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"images must be PIL images or HxWxC uint8 arrays, got {type(image).__name__}")
        return self.transform(image)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """The closest transformers configuration (same steps; transformers resamples with its own backend)."""
        CLIPImageProcessor(
            size={"shortest_edge": self.size},
            crop_size={"height": self.size, "width": self.size},
            resample=Image.Resampling.BICUBIC,
            image_mean=list(OPENAI_MEAN),
            image_std=list(OPENAI_STD),
        ).save_pretrained(path)


class LongCLIPTokenizer:
    """OpenAI CLIP's BPE with Long-CLIP's ``tokenize`` conventions, callable like a transformers tokenizer."""

    def __init__(self) -> None:
        try:
            from open_clip.tokenizer import SimpleTokenizer
        except ImportError as err:
            raise ImportError(
                "Long-CLIP's tokenizer (OpenAI CLIP's BPE) comes from open_clip: pip install 'fgclip-model[longclip]'"
            ) from err
        self.bpe = SimpleTokenizer()
        self.sot, self.eot = self.bpe.sot_token_id, self.bpe.eot_token_id

    def __call__(
        self, texts: Sequence[str], max_length: int = 248, padding: bool | str = True, **_: object
    ) -> dict[str, torch.Tensor]:
        # open_clip's call is longclip.tokenize(truncate=True): SOT + BPE + EOT, cut keeping EOT, zero padding
        ids = self.bpe(list(texts), context_length=max_length).long()
        if padding != "max_length":  # pad to the longest text only (EOT is the last non-zero id of each row)
            ids = ids[:, : max(int((ids != 0).sum(dim=1).max()), 1)] if len(ids) else ids[:, :1]
        return {"input_ids": ids}


class LongCLIPProcessor(WalkProcessor):
    """Long-CLIP's own preprocessing (:class:`LongCLIPImageTransform`) and tokenisation
    (:class:`LongCLIPTokenizer`, or the checkpoint folder's tokenizer when it has one). One position table serves
    every walk; text is padded to the longest in the batch (the causal mask makes padding irrelevant)."""

    max_lengths = {"short": 248, "box": 248, "long": 248}
    default_padding = True

    def __init__(self, image_processor: LongCLIPImageTransform | None = None, tokenizer=None, max_lengths=None):
        tokenizer = LongCLIPTokenizer() if tokenizer is None else tokenizer
        super().__init__(image_processor or LongCLIPImageTransform(), tokenizer, max_lengths)

    @classmethod
    def from_pretrained(cls, path, image_size: int | None = None, max_lengths: dict[str, int] | None = None, **_):
        """A ``.pt`` file or a folder: the folder's tokenizer when it holds one, else OpenAI CLIP's BPE."""
        path = Path(path)
        has_tokenizer = path.is_dir() and any(
            (path / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")
        )
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else LongCLIPTokenizer()
        if max_lengths is None and (path / "config.json").is_file():  # a model stretched past 248 (e.g. 512)
            text = json.loads((path / "config.json").read_text()).get("text_config") or {}
            length = text.get("max_position_embeddings", 248)
            max_lengths = dict.fromkeys(cls.max_lengths, length)
        return cls(LongCLIPImageTransform(image_size or 224), tokenizer, max_lengths)

    def tokenize(self, text, walk_type: str = "short", padding=None, lowercase: bool = True):
        if isinstance(self.tokenizer, LongCLIPTokenizer):
            lowercase = False  # the BPE cleans and lower-cases itself, after ftfy and HTML unescaping
        return super().tokenize(text, walk_type, padding, lowercase)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.image_processor.save_pretrained(path)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(path)

    def preprocess_images(self, images, **_: object) -> dict[str, torch.Tensor]:
        batch = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
        return {"pixel_values": torch.stack([self.image_processor(im) for im in batch])}
