"""One encoding interface over every model family, as the benchmarks need it.

An :class:`Encoder` turns PIL images, texts (with a walk: ``short``, ``box`` or ``long``) and normalised boxes
into L2-normalised features, batched, with the family's own processor conventions (FG-CLIP: square squash and
first-EOS pooling; FG-CLIP 2: NaFlex patches and text padded to the walk's length; CLIP / Long-CLIP: no region
features). Families are picked from the checkpoint's ``config.json`` through ``fgclip_model.load``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import fgclip_model


@dataclass
class Encoder:
    """Features of a loaded model (``fgclip_model.load``): ``family`` is ``fgclip``, ``fgclip2`` or ``clip``."""

    model: torch.nn.Module
    processor: object
    family: str
    device: torch.device | str = "cpu"
    batch_size: int = 64
    max_num_patches: int | None = None  # FG-CLIP 2: a fixed patch budget (None: the dynamic bucket, as the reference)

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu", **kwargs) -> Encoder:
        model, processor = fgclip_model.load(path)
        if processor.tokenizer is None:
            raise ValueError(f"{path} holds no tokenizer files: a benchmark needs one to encode its texts")
        return cls(model.to(device), processor, fgclip_model.detect_family(path), torch.device(device), **kwargs)

    @property
    def has_regions(self) -> bool:
        return self.family in ("fgclip", "fgclip2")

    def _image_inputs(self, images) -> dict[str, torch.Tensor]:
        kwargs = {}
        if self.family == "fgclip2" and self.max_num_patches:
            kwargs = {"max_num_patches": self.max_num_patches, "dynamic_max_patches": False}
        inputs = self.processor(images=images, **kwargs)
        return {k: v.to(self.device) for k, v in inputs.items()}

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return getattr(out, "pooler_output", out)  # transformers' CLIPModel returns a model output

    @torch.no_grad()
    def images(self, images: list) -> torch.Tensor:
        """[N, D] normalised image features."""
        out = []
        for start in range(0, len(images), self.batch_size):
            inputs = self._image_inputs(images[start : start + self.batch_size])
            if self.family == "fgclip2":
                features = self.model.get_image_features(
                    inputs["pixel_values"], inputs["pixel_attention_mask"], inputs["spatial_shapes"]
                )
            else:
                features = self._tensor(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
            out.append(F.normalize(features.float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def texts(self, texts: list[str], walk: str = "short") -> torch.Tensor:
        """[N, D] normalised text features; ``walk`` picks the family's text path (``short``, ``box``, ``long``)."""
        out = []
        for start in range(0, len(texts), 256):
            tokens = self.processor(text=texts[start : start + 256], walk_type=walk)
            ids = tokens["input_ids"].to(self.device)
            if self.family == "clip":
                features = self._tensor(self.model.get_text_features(input_ids=ids))
            else:
                features = self.model.get_text_features(ids, walk_type=walk)
            out.append(F.normalize(features.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1)

    @torch.no_grad()
    def regions(self, images: list, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Normalised region features, one [n_i, D] tensor per image, for normalised xyxy boxes."""
        if not self.has_regions:
            raise ValueError(f"the {self.family} family has no region features")
        out: list[torch.Tensor] = []
        for start in range(0, len(images), self.batch_size):
            chunk, chunk_boxes = images[start : start + self.batch_size], boxes[start : start + self.batch_size]
            inputs = self._image_inputs(chunk)
            if self.family == "fgclip2":
                features = self.model.get_image_region_features(
                    inputs["pixel_values"],
                    inputs["pixel_attention_mask"],
                    inputs["spatial_shapes"],
                    image_sizes=[(1, 1)] * len(chunk),
                    region_infos=chunk_boxes,  # normalised = pixels of 1x1
                )
            else:
                features = self.model.get_image_region_features(inputs["pixel_values"], chunk_boxes)
            out.extend(F.normalize(f.float(), dim=-1) for f in features)
        return out
