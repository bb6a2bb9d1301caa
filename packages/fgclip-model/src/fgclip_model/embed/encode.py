"""Model calls shared by ``embed`` and ``search``: image, region and text embeddings for any family, and the
family's image-text score.

What differs between families is read from :data:`fgclip_model.auto.FAMILIES` (``walks``, ``regions``) and from
the model's own parameters (a ``logit_bias`` means SigLIP-style sigmoid scores), never from a family's name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgclip_model.auto import FAMILIES


def _tensor(out) -> torch.Tensor:
    """A feature method's result as a float32 tensor (transformers' CLIP / SigLIP 2 return an output object)."""
    return getattr(out, "pooler_output", out).float()


@torch.no_grad()
def encode_texts(model, processor, texts: list[str], family: str, walk: str = "short") -> torch.Tensor:
    """Un-normalised text embeddings [n, D]; ``walk`` (short / long / box) for the families that have walks."""
    if FAMILIES[family].walks:
        tokens = processor(text=texts, walk_type=walk)
        return _tensor(model.get_text_features(tokens["input_ids"], tokens.get("attention_mask"), walk_type=walk))
    tokens = processor(text=texts)
    return _tensor(model.get_text_features(tokens["input_ids"], tokens.get("attention_mask")))


def _to(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


@torch.no_grad()
def encode_images(
    model, inputs: dict[str, torch.Tensor], boxes: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Un-normalised image embeddings [B, D], and (with ``boxes``: normalised xyxy per image) region embeddings,
    one [n_i, D] tensor per image."""
    device = next(model.parameters()).device
    inputs = _to(inputs, device)
    if boxes is None:
        return _tensor(model.get_image_features(**inputs)), None
    boxes = [b.to(device) for b in boxes]
    if _eager(model) and hasattr(model, "get_image_and_region_features"):  # one vision pass for both
        images, regions = model.get_image_and_region_features(**inputs, boxes=boxes)
    else:  # a backend computes the image features; regions run eagerly (as every backend runs them)
        images = model.get_image_features(**inputs)
        regions = model.get_image_region_features(**inputs, boxes=boxes)
    return _tensor(images), [r.float() for r in regions]


def _eager(model) -> bool:
    from fgclip_model.backends import BackendModel

    return not isinstance(model, BackendModel)


def model_dim(model, processor, family: str) -> int:
    """The embedding width, from one text (or, without a tokenizer, one blank image) through the model."""
    if processor.tokenizer is not None:
        return int(encode_texts(model, processor, ["a photo"], family).shape[-1])
    from PIL import Image

    images, _ = encode_images(model, dict(processor(images=[Image.new("RGB", (64, 64))])))
    return int(images.shape[-1])


def score(model, cosine: torch.Tensor, regions: bool = False) -> torch.Tensor:
    """The family's score of a cosine similarity: ``exp(logit_scale) · cos`` (+ ``logit_bias`` through a sigmoid
    where the model has one: FG-CLIP 2 and SigLIP 2 give a probability); regions use ``logit_scale_finegraind``
    (the region loss's softmax temperature) where the model has it."""
    scale_name = "logit_scale_finegraind" if regions and hasattr(model, "logit_scale_finegraind") else "logit_scale"
    scale = getattr(model, scale_name).detach().float().exp().cpu()
    logits = scale * cosine
    bias = getattr(model, "logit_bias", None)
    if bias is not None and not regions:
        return torch.sigmoid(logits + bias.detach().float().cpu())
    return logits


def normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
