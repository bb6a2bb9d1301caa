"""Registration with the transformers Auto classes, and :func:`load` (family detection from ``config.json``).

FG-CLIP v1 checkpoints say ``model_type: "clip"`` like every OpenAI CLIP, so the family is told apart by
``architectures``: for ``CLIPConfig`` the Auto mapping holds ``(CLIPModel, FGCLIPModel)`` and transformers picks
the class named in ``architectures`` — plain CLIP checkpoints keep loading as ``CLIPModel``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoModel, AutoModelForCausalLM, CLIPConfig, CLIPModel

from fgclip_model.fgclip import FGCLIPModel

_registered = False


def register_auto_classes() -> None:
    """Make ``AutoModel.from_pretrained`` (and the Hub README's ``AutoModelForCausalLM``) load fgclip models
    without ``trust_remote_code``. Idempotent; called on ``import fgclip_model``."""
    global _registered
    if _registered:
        return
    AutoModel._model_mapping.register(CLIPConfig, (CLIPModel, FGCLIPModel), exist_ok=True)
    AutoModelForCausalLM._model_mapping.register(CLIPConfig, (FGCLIPModel,), exist_ok=True)
    _registered = True


# family name -> (architectures that identify it, model class)
FAMILIES: dict[str, tuple[tuple[str, ...], type]] = {
    "fgclip": (("FGCLIPModel",), FGCLIPModel),
}


def detect_family(path: str | os.PathLike) -> str:
    """The model family of a checkpoint folder, from its ``config.json``."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: expected a checkpoint folder saved by save_pretrained")
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    for family, (names, _) in FAMILIES.items():
        if any(a in names for a in architectures):
            return family
    if config.get("model_type") == "clip":
        return "clip"
    raise ValueError(
        f"{config_file}: architectures {architectures} / model_type {config.get('model_type')!r} is not a known "
        f"family (known: {', '.join([*FAMILIES, 'clip'])})"
    )


def load(path: str | os.PathLike, **kwargs):
    """Load a checkpoint folder of any supported family: returns ``(model, processor)``.

    The processor is the one saved in the folder (tokenizer + image processor) or ``None`` when the folder has
    neither. Extra keyword arguments go to ``from_pretrained`` (e.g. ``dtype``).
    """
    from fgclip_model.fgclip.processing import FGCLIPProcessor

    family = detect_family(path)
    if family == "clip":
        model = CLIPModel.from_pretrained(path, **kwargs)
    else:
        model = FAMILIES[family][1].from_pretrained(path, **kwargs)
    return model.eval(), FGCLIPProcessor.from_checkpoint(path, image_size=model.config.vision_config.image_size)
