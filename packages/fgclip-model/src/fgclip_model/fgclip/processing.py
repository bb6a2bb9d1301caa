"""FG-CLIP v1 input processing: the reference's square squash + CLIP normalisation, and walk-aware tokenisation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from fgclip_model.processing import WalkProcessor


def squash(image: Image.Image | np.ndarray, size: int) -> Image.Image:
    """RGB, resized to ``size x size`` with bicubic filtering, aspect ratio *not* kept (as every FG-CLIP caller
    does, so normalised box coordinates stay valid on the model input)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"images must be PIL images or HxWxC uint8 arrays, got {type(image).__name__}")
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


class FGCLIPProcessor(WalkProcessor):
    """``CLIPTokenizer`` + ``CLIPImageProcessor`` with FG-CLIP's conventions.

    * images are squashed to ``image_size`` (224 base, 336 large), then rescaled and normalised with the
      OpenAI CLIP mean / std — no centre crop;
    * text is lower-cased and truncated to the walk's maximum (77 for short / box, 248 for long); padding is to
      the longest text by default — the model pools the first EOS under a causal mask, so padding never changes
      the result.
    """

    max_lengths = {"short": 77, "box": 77, "long": 248}
    default_padding = True
    image_processor_class = CLIPImageProcessor

    def __init__(self, image_processor: CLIPImageProcessor, tokenizer=None, image_size: int | None = None) -> None:
        super().__init__(image_processor, tokenizer)
        size = image_processor.crop_size or image_processor.size or {}
        self.image_size = image_size or size.get("height") or size.get("shortest_edge") or 224

    @classmethod
    def default_image_processor(cls, image_size: int | None = None) -> CLIPImageProcessor:
        size = image_size or 224
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @classmethod
    def from_pretrained(cls, path, image_size: int | None = None, max_lengths=None, **kwargs) -> FGCLIPProcessor:
        processor = super().from_pretrained(path, image_size, max_lengths)
        if image_size:
            processor.image_size = image_size
        return processor

    from_checkpoint = from_pretrained

    def preprocess_images(self, images, **_: object) -> dict[str, torch.Tensor]:
        batch = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
        squashed = [squash(im, self.image_size) for im in batch]
        out = self.image_processor(squashed, do_resize=False, do_center_crop=False, return_tensors="pt")
        return {"pixel_values": out["pixel_values"]}
