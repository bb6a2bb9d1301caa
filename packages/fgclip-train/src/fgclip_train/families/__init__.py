"""The model families ``stage2``'s loop can train: a small registry instead of if-chains over names.

A training family refers to its model family's descriptor (``fgclip_model.ModelFamily``: name, classes,
capabilities) and owns everything that differs between models: how to build the model, its tokenizer layout, whether the
dataset squashes images to squares, its collator, its default loss weights, its validator, the parameters exempt
from weight decay, and the per-step state that must survive a resume (FG-CLIP 2's hard-negative margin τ). ``fgclip``
and ``fgclip2`` are built in (one module each); other packages register theirs with :func:`register_family`
(``fgclip_longclip`` adds ``longclip`` and its presets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fgclip_model import ModelFamily
from fgclip_model.stage2 import LossWeights, Stage2Losses
from fgclip_train.config import TrainConfig, register_presets


@dataclass(frozen=True)
class TrainingFamily:
    """One trainable model family (see the module docstring); its name is its model family's."""

    model: ModelFamily
    tokenizer_layout: str  # "fgclip" (CLIP ids, EOS pooling) or "fgclip2" (Gemma ids, last-position pooling)
    build_model: Callable  # (config, tokenizer) -> nn.Module with .config and compute_loss(batch, weights, switches)
    build_collator: Callable  # (config, tokenizer, model_config, image_size) -> collator emitting Stage2Batch
    square_images: bool  # the dataset squashes images to the model's square size
    default_loss_weights: LossWeights | None = None  # the model's own (None: its loss has no weights)
    build_validator: Callable | None = None  # (config, val_records, sources, tokenizer, collator, resize) -> fn
    no_decay: Callable = field(default=lambda model: set())  # (model) -> parameter names without weight decay
    state: Callable = field(default=lambda model: {})  # (model) -> per-step state kept in checkpoints
    restore: Callable = field(default=lambda model, state: None)  # (model, trainer state) -> None
    text_length_option: bool = False  # model.text_length (the stretched text length) applies to this family

    @property
    def name(self) -> str:
        return self.model.name


FAMILIES: dict[str, TrainingFamily] = {}


def loss_switches(config: TrainConfig) -> Stage2Losses:
    """Which local losses a step computes (``loss.region``, ``loss.hard_negatives``)."""
    return Stage2Losses(regions=config.loss.region, hard=config.loss.hard_negatives)


def loss_weights(config: TrainConfig, family: TrainingFamily) -> LossWeights | None:
    """The family's default weights with those the configuration sets (``loss.*_weight``) replaced."""
    if family.default_loss_weights is None:
        return None
    chosen = {"region": config.loss.region_weight, "tic": config.loss.tic_weight, "hard": config.loss.hard_weight}
    return replace(family.default_loss_weights, **{k: v for k, v in chosen.items() if v is not None})


def register_family(family: TrainingFamily, presets: dict[str, dict] | None = None) -> None:
    """Make ``family`` trainable by ``--model.family=<name>``, and its ``presets`` (name -> settings) selectable by
    ``--preset`` (see :func:`fgclip_train.config.register_presets`)."""
    FAMILIES[family.name] = family
    if presets:
        register_presets(presets)


def get_family(name: str) -> TrainingFamily:
    _register_builtins()
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]


def _register_builtins() -> None:
    if "fgclip" in FAMILIES and "fgclip2" in FAMILIES:
        return
    from fgclip_train.families import fgclip, fgclip2

    for module in (fgclip, fgclip2):
        FAMILIES.setdefault(module.FAMILY.name, module.FAMILY)
