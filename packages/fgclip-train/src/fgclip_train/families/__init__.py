"""The model families ``stage2``'s loop can train: a small registry instead of if-chains over names.

A family owns everything that differs between models: how to build the model, its tokenizer layout, whether the
dataset squashes images to squares, its collator, its loss keywords, its validator, the parameters exempt from
weight decay, and the per-step state that must survive a resume (FG-CLIP 2's hard-negative margin τ). ``fgclip``
and ``fgclip2`` are built in (one module each); other packages register theirs with :func:`register_family`
(``fgclip_longclip`` adds ``longclip``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fgclip_train.config import TrainConfig


@dataclass(frozen=True)
class Family:
    """One trainable model family (see the module docstring)."""

    name: str
    tokenizer_layout: str  # "fgclip" (CLIP ids, EOS pooling) or "fgclip2" (Gemma ids, last-position pooling)
    build_model: Callable  # (config, tokenizer) -> nn.Module with .config and a loss-returning forward
    build_collator: Callable  # (config, tokenizer, model_config, image_size) -> collator
    square_images: bool  # the dataset squashes images to the model's square size
    loss_kwargs: Callable[[TrainConfig], dict] = lambda config: {}
    build_validator: Callable | None = None  # (config, val_records, sources, tokenizer, collator, resize) -> fn
    no_decay: Callable = field(default=lambda model: set())  # (model) -> parameter names without weight decay
    state: Callable = field(default=lambda model: {})  # (model) -> per-step state kept in checkpoints
    restore: Callable = field(default=lambda model, state: None)  # (model, trainer state) -> None


FAMILIES: dict[str, Family] = {}


def loss_switches(config: TrainConfig):
    """Which local losses the FG-CLIP families compute (``loss.region``, ``loss.hard_negatives``)."""
    from fgclip_model.stage2 import Stage2Losses

    return Stage2Losses(regions=config.loss.region, hard=config.loss.hard_negatives)


def register_family(family: Family) -> None:
    """Make ``family`` trainable by ``--model.family=<name>``."""
    FAMILIES[family.name] = family


def get_family(name: str) -> Family:
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
