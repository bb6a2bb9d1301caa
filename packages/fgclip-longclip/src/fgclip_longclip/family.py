"""Long-CLIP as a family of fgclip-train's loop: model, collator, validator and the fine-tuning presets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from fgclip_data import FGCLIPCollator
from fgclip_data.tokenizer import CLIP_VOCAB
from fgclip_model import get_model_family
from fgclip_model.longclip import clip_to_longclip
from fgclip_train import TrainConfig, TrainingFamily, register_family
from fgclip_train.config import SMALL_TOWER
from fgclip_train.model import enable_activation_checkpointing, promote_scalar_parameters
from fgclip_train.preflight import RunError
from fgclip_train.validation import recall_at_1, validation_samples

from .model import LongCLIPForPCM, freeze_position_rows, load_from_clip, no_decay_parameter_names

SHORT_LENGTH, LONG_LENGTH = 77, 248


def long_length(config: TrainConfig) -> int:
    """The stretched text length: ``model.text_length``, else the paper's 248."""
    return config.model.text_length or LONG_LENGTH


def build_model(config: TrainConfig, tokenizer) -> LongCLIPForPCM:
    """``model.init``: a CLIP folder or ``.pt`` (stretched to ``model.text_length`` positions, 248 by default, the
    first 20 frozen); none: a CLIP of ``model.size`` built from scratch, then stretched the same way.
    ``model.extra_logit_scale`` resets the temperature (the reference: ln 100)."""
    if config.model.init:
        try:
            clip = load_from_clip(config.model.init, length=long_length(config))
        except ValueError as err:  # a refused (pickled code), truncated or foreign file: one line, exit 2
            raise RunError(f"model.init: {err}") from err
    else:
        size = {k: dict(v) if isinstance(v, dict) else v for k, v in config.model.size.items()}
        size.setdefault("text_config", {}).update(
            vocab_size=CLIP_VOCAB,
            max_position_embeddings=SHORT_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
        clip = clip_to_longclip(CLIPModel(CLIPConfig(**size)), long_length(config))
        freeze_position_rows(clip)
    if config.model.extra_logit_scale is not None:
        with torch.no_grad():
            clip.logit_scale.fill_(config.model.extra_logit_scale)
    if config.model.gradient_checkpointing:
        enable_activation_checkpointing(clip)
    promote_scalar_parameters(clip)
    return LongCLIPForPCM(clip.float().train())


def build_collator(config: TrainConfig, tokenizer, model_config, image_size: int | None) -> FGCLIPCollator:
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size)
    # the stretched model's length (the configured one before a model exists)
    if model_config is not None:
        length = model_config.text_config.max_position_embeddings
    else:
        length = long_length(config) if config is not None else LONG_LENGTH
    return FGCLIPCollator(
        tokenizer, processor, add_box_loss=False, use_hard_neg=False, short_length=SHORT_LENGTH, long_length=length
    )


class RetrievalValidator:
    """Image↔text R@1 with long and with short captions (the Long-CLIP benchmarks' metric)."""

    def __init__(self, records, images, collator, resize, batch_size: int = 64) -> None:
        self.samples = validation_samples(records, images, resize, negatives=None)
        self.collator, self.batch_size = collator, batch_size
        self.long_length = collator.long_length

    @torch.no_grad()
    def __call__(self, model, device=None) -> dict[str, float]:
        clip = model.clip
        device = device or next(clip.parameters()).device
        was_training = clip.training
        clip.eval()
        images, long, short = [], [], []
        for start in range(0, len(self.samples), self.batch_size):
            chunk = self.samples[start : start + self.batch_size]
            pixels = self.collator.images([s.image for s in chunk])["pixel_values"].to(device)
            images.append(clip.get_image_features(pixel_values=pixels).pooler_output)
            for texts, length, out in (
                ([s.caption for s in chunk], self.long_length, long),
                ([s.short_caption for s in chunk], SHORT_LENGTH, short),
            ):
                ids = self.collator.tokenize(texts, length).to(device)
                out.append(clip.get_text_features(input_ids=ids).pooler_output)
        image, long, short = (F.normalize(torch.cat(x).float(), dim=-1) for x in (images, long, short))
        clip.train(was_training)
        metrics = {}
        metrics["i2t_r1_long"], metrics["t2i_r1_long"] = recall_at_1(image @ long.T)
        metrics["i2t_r1_short"], metrics["t2i_r1_short"] = recall_at_1(image @ short.T)
        return metrics


def build_validator(config, val_records, sources, tokenizer, collator, resize) -> RetrievalValidator:
    return RetrievalValidator(val_records, sources.images, collator, resize)


LONGCLIP = TrainingFamily(
    model=get_model_family("longclip"),
    tokenizer_layout="fgclip",
    build_model=build_model,
    build_collator=build_collator,
    square_images=True,
    build_validator=build_validator,
    no_decay=no_decay_parameter_names,
    text_length_option=True,
)

SMALL_CLIP = {
    "text_config": dict(SMALL_TOWER),
    "vision_config": {**SMALL_TOWER, "image_size": 128, "patch_size": 16},
    "projection_dim": 96,
}

LONGCLIP_PRESETS = {
    # no arguments: a small CLIP on FG-Shapes' long captions, on the CPU in minutes
    "longclip-fgshapes": {
        "model": {"family": "longclip", "size": SMALL_CLIP, "extra_logit_scale": math.log(10.0)},
        "data": {"fgshapes_n": 5000, "short_prefix": "", "negatives": None},
        "loss": {"region": False, "hard_negatives": False},
        "optim": {"lr": 5e-4, "weight_decay": 0.01, "betas": (0.9, 0.98), "eps": 1e-6, "grad_clip": 1.0},
        "schedule": {"epochs": 3, "batch_size": 32, "warmup_steps": 20, "seed": 0},
        "runtime": {"output_dir": "runs/longclip-fgshapes", "zero_stage": 2},
    },
    # the reference recipe: ShareGPT4V (records converted with `fgclip-data sharegpt4v
    # convert`), 128 per GPU (global 2048 on 16 GPUs), lr 1e-6, AdamW wd 0.01 on everything but the frozen
    # rows, 200 warm-up steps then cosine, logit scale reset to ln 100, label smoothing 0.1, PCA dim 32.
    # Epochs: the code's default is 2, the training doc recommends 6 (the pre-fix code hard-coded 6): 6 here.
    "longclip": {
        "model": {"family": "longclip", "extra_logit_scale": 4.6052},
        "data": {"short_prefix": "", "negatives": None, "image_size": 224},
        "loss": {"region": False, "hard_negatives": False},
        "optim": {"lr": 1e-6, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
        "schedule": {"epochs": 6, "batch_size": 128, "warmup_steps": 200, "scheduler": "cosine", "seed": 42},
        "runtime": {
            "precision": "bf16",
            "zero_stage": 2,
            "output_dir": "runs/longclip",
            "eval_before": False,
            "eval_after": True,
        },
    },
}


def register() -> None:
    """Long-CLIP's training family and presets, through fgclip-train's public registration."""
    register_family(LONGCLIP, presets=LONGCLIP_PRESETS)
