"""FG-CLIP 2 processor: the Gemma tokenizer padded to the walk's length, and the NaFlex image processor."""

from __future__ import annotations

import torch

from fgclip_model.processing import WalkProcessor

from .image_processing import FGCLIP2ImageProcessor


class FGCLIP2Processor(WalkProcessor):
    """Tokenizer (the checkpoint's Gemma tokenizer through ``AutoTokenizer``) + :class:`FGCLIP2ImageProcessor`.

    Text is lower-cased and **padded to the walk's maximum length** by default (64 for short / box, 196 for
    long): the FG-CLIP 2 text tower pools the last position, and the released weights were trained on text
    padded that way. Images go through the NaFlex processor (dynamic patch budget unless
    ``dynamic_max_patches=False``; ``max_num_patches`` then sets it).
    """

    max_lengths = {"short": 64, "box": 64, "long": 196}
    default_padding = "max_length"
    image_processor_class = FGCLIP2ImageProcessor

    def preprocess_images(self, images, **kwargs) -> dict[str, torch.Tensor]:
        out = self.image_processor(images, return_tensors="pt", **kwargs)
        return {k: out[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
