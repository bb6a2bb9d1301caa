"""FG-CLIP 2 as a training family: Gemma token ids pooled at the last position, NaFlex images, the sigmoid loss
with TIC and the thresholded rank loss, whose margin τ is per-step state kept across resumes."""

from __future__ import annotations

import math

import torch

from fgclip_data import FGCLIP2Collator
from fgclip_model import get_model_family
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
from fgclip_train.config import TrainConfig
from fgclip_train.families import TrainingFamily
from fgclip_train.model import finish_model, scratch_size
from fgclip_train.validation import build_validator


def build_model(config: TrainConfig, tokenizer) -> torch.nn.Module:
    """From scratch (``model.size``, SigLIP's t = 10, b = -10), from an FG-CLIP 2 checkpoint, or from a SigLIP 2
    NaFlex checkpoint (``model.from_base``)."""
    init = config.model.init
    if init is None:
        size = scratch_size(config, tokenizer, layout="fgclip2")
        text = size["text_config"]
        text.setdefault("projection_size", text.get("hidden_size", 768))
        text.setdefault("padding_side", tokenizer.padding_side)  # the layout its text is trained and read in
        model = FGCLIP2Model(FGCLIP2Config(**size))
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
    elif config.model.from_base:
        model = FGCLIP2Model.from_siglip2(init)
    else:
        model = FGCLIP2Model.from_pretrained(init)
    return finish_model(config, model)


def build_collator(config: TrainConfig, tokenizer, model_config, image_size: int | None) -> FGCLIP2Collator:
    text = model_config.text_config
    return FGCLIP2Collator(
        tokenizer,
        FGCLIP2ImageProcessor(patch_size=model_config.vision_config.patch_size),
        max_num_patches=config.data.max_num_patches,
        min_num_patches=config.data.min_num_patches,
        seed=config.schedule.seed,
        short_length=text.max_position_embeddings,
        long_length=text.longtext_len,
        max_boxes=config.data.max_boxes,
        add_box_loss=config.loss.region,
        use_hard_neg=config.loss.hard_negatives,
    )


def state(model) -> dict:
    """The hard-negative margin τ the next step uses (a buffer the loss updates)."""
    return {"hard_margin": float(model.hard_margin)}


def restore(model, saved: dict) -> None:
    if "hard_margin" in saved:
        model.hard_margin.fill_(saved["hard_margin"])


FAMILY = TrainingFamily(
    model=get_model_family("fgclip2"),
    tokenizer_layout="fgclip2",
    build_model=build_model,
    build_collator=build_collator,
    square_images=False,
    default_loss_weights=FGCLIP2Model.default_loss_weights,
    build_validator=build_validator,
    state=state,
    restore=restore,
)
