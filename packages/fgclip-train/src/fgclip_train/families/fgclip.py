"""FG-CLIP (v1) as a training family: CLIP token ids with first-EOS pooling, square images, the softmax losses."""

from __future__ import annotations

import torch
from transformers import CLIPImageProcessor

from fgclip_data import FGCLIPCollator
from fgclip_model import FGCLIPConfig, FGCLIPModel, get_model_family
from fgclip_train.config import TrainConfig
from fgclip_train.families import TrainingFamily
from fgclip_train.model import finish_model, scratch_size
from fgclip_train.validation import build_validator


def build_model(config: TrainConfig, tokenizer) -> torch.nn.Module:
    """From scratch (``model.size``), from an FG-CLIP checkpoint, or from a plain CLIP (``model.from_base``)."""
    init = config.model.init
    if init is None:
        model = FGCLIPModel(FGCLIPConfig(**scratch_size(config, tokenizer, layout="fgclip")))
    elif config.model.from_base:  # an OpenAI-style HF CLIP: long tables and filip projection come from the stretch
        model = FGCLIPModel.from_pretrained(init, strict=False)
        model.stretch_long_positions()
    else:
        model = FGCLIPModel.from_pretrained(init)
    return finish_model(config, model)


def build_collator(config: TrainConfig, tokenizer, model_config, image_size: int | None) -> FGCLIPCollator:
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size)
    return FGCLIPCollator(
        tokenizer,
        processor,
        short_length=model_config.text_config.max_position_embeddings,
        long_length=model_config.long_max_position_embeddings,
        max_boxes=config.data.max_boxes,
        add_box_loss=config.loss.region,
        use_hard_neg=config.loss.hard_negatives,
    )


FAMILY = TrainingFamily(
    model=get_model_family("fgclip"),
    tokenizer_layout="fgclip",
    build_model=build_model,
    build_collator=build_collator,
    square_images=True,
    default_loss_weights=FGCLIPModel.default_loss_weights,
    build_validator=build_validator,
)
