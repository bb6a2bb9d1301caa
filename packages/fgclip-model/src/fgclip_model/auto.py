"""Registration with the transformers Auto classes, and :func:`load` (family detection from ``config.json``).

FG-CLIP v1 checkpoints say ``model_type: "clip"`` like every OpenAI CLIP, so that family is told apart by
``architectures``: for ``CLIPConfig`` the Auto mapping holds ``(CLIPModel, FGCLIPModel)`` and transformers picks
the class named in ``architectures`` — plain CLIP checkpoints keep loading as ``CLIPModel``. FG-CLIP 2 has its
own ``model_type: "fgclip2"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    Siglip2Model,
)

from fgclip_model.fgclip import FGCLIPModel
from fgclip_model.fgclip.processing import FGCLIPProcessor
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model, FGCLIP2TextConfig, FGCLIP2VisionConfig
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor, Fgclip2ImageProcessor
from fgclip_model.fgclip2.processing import FGCLIP2Processor

_registered = False


def register_auto_classes() -> None:
    """Make ``AutoModel`` / ``AutoConfig`` / ``AutoImageProcessor`` / ``AutoProcessor`` (and the Hub READMEs'
    ``AutoModelForCausalLM``) load fgclip checkpoints without ``trust_remote_code``. Idempotent; called on
    ``import fgclip_model``."""
    global _registered
    if _registered:
        return
    AutoModel._model_mapping.register(CLIPConfig, (CLIPModel, FGCLIPModel), exist_ok=True)
    AutoModelForCausalLM._model_mapping.register(CLIPConfig, (FGCLIPModel,), exist_ok=True)

    for config in (FGCLIP2Config, FGCLIP2TextConfig, FGCLIP2VisionConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)
    AutoModelForCausalLM.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)
    AutoImageProcessor.register(FGCLIP2Config, image_processor_classes={"pil": FGCLIP2ImageProcessor}, exist_ok=True)
    AutoImageProcessor.register(
        FGCLIP2VisionConfig, image_processor_classes={"pil": Fgclip2ImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(FGCLIP2Config, FGCLIP2Processor, exist_ok=True)
    _registered = True


@dataclass(frozen=True)
class Family:
    """A model family: how to recognise its ``config.json`` and which classes load it."""

    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    model_class: type
    processor_class: type


# the small registry behind load(): the first family whose architectures (or model type) match wins
FAMILIES: dict[str, Family] = {
    "fgclip": Family(("FGCLIPModel",), (), FGCLIPModel, FGCLIPProcessor),
    "fgclip2": Family(("FG_CLIP2_Model", "Fgclip2Model", "FGCLIP2Model"), ("fgclip2",), FGCLIP2Model, FGCLIP2Processor),
    "clip": Family((), ("clip",), CLIPModel, FGCLIPProcessor),
    # plain SigLIP 2 (NaFlex), the baseline FG-CLIP 2 starts from: same image processor, one 64-token text walk
    "siglip2": Family(("Siglip2Model",), ("siglip2",), Siglip2Model, FGCLIP2Processor),
}


def detect_family(path: str | os.PathLike) -> str:
    """The model family of a checkpoint folder, from its ``config.json``."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: expected a checkpoint folder saved by save_pretrained")
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    for name, family in FAMILIES.items():
        if any(a in family.architectures for a in architectures):
            return name
    for name, family in FAMILIES.items():
        if config.get("model_type") in family.model_types:
            return name
    raise ValueError(
        f"{config_file}: architectures {architectures} / model_type {config.get('model_type')!r} is not a known "
        f"family (known: {', '.join(FAMILIES)})"
    )


def load(path: str | os.PathLike, **kwargs):
    """Load a checkpoint folder of any supported family: returns ``(model, processor)`` with the model in eval mode.

    The processor holds the folder's tokenizer (``None`` when it has none) and image processor (the family's
    defaults when absent). Plain CLIP folders get FG-CLIP's processor, which squashes images to the model's
    square size instead of centre-cropping them. Extra keyword arguments go to ``from_pretrained``
    (e.g. ``dtype``).
    """
    family = FAMILIES[detect_family(path)]
    model = family.model_class.from_pretrained(path, **kwargs)
    image_size = getattr(model.config.vision_config, "image_size", None)
    processor = family.processor_class.from_pretrained(path, image_size=image_size, max_lengths=text_lengths(model))
    return model.eval(), processor


def text_lengths(model) -> dict[str, int]:
    """Token budget of each text walk, read from the model's position tables."""
    text = model.config.text_config
    short = text.max_position_embeddings
    if hasattr(model.config, "long_max_position_embeddings"):  # FG-CLIP v1
        long = model.config.long_max_position_embeddings
    else:  # FG-CLIP 2 (longtext_len) or plain / Long-CLIP (one table)
        long = getattr(text, "longtext_len", short)
    return {"short": short, "box": short, "long": long}
