"""The model families ``stage2``'s loop can train: a small registry instead of if-chains over names.

A family says how to build the model, the tokenizer layout, the dataset resize, the collator, the extra
forward keywords (loss weights), the validator and the parameters exempt from weight decay. ``fgclip`` and
``fgclip2`` are built in; other packages register theirs (``fgclip_longclip`` adds ``longclip``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .config import TrainConfig


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer_layout: str  # "fgclip" (CLIP ids, EOS pooling) or "fgclip2" (Gemma ids, last-position pooling)
    build_model: Callable  # (config, tokenizer) -> nn.Module with .config and a loss-returning forward
    build_collator: Callable  # (config, tokenizer, model_config, image_size) -> collator
    square_images: bool  # the dataset squashes images to the model's square size
    loss_kwargs: Callable[[TrainConfig], dict] = lambda config: {}
    build_validator: Callable | None = None  # (config, val_records, sources, tokenizer, collator, resize) -> fn
    no_decay: Callable = field(default=lambda model: set())  # (model) -> parameter names without weight decay


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    FAMILIES[family.name] = family


def get_family(name: str) -> Family:
    _register_builtins()
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]


def _fgclip_loss_kwargs(config: TrainConfig) -> dict:
    if config.model.family == "fgclip":
        return {"region_loss_weight": config.region_weight, "hard_loss_weight": config.loss.hard_weight}
    from fgclip_model.fgclip2 import FGCLIP2LossWeights

    return {
        "weights": FGCLIP2LossWeights(
            region=config.region_weight, tic=config.loss.tic_weight, hard=config.loss.hard_weight
        )
    }


def _fgclip_validator(config, val_records, sources, tokenizer, collator, resize):
    from .data import fgshapes_vocabulary
    from .validation import Validator

    return Validator(
        val_records,
        sources.images,
        tokenizer,
        collator,
        resize,
        fgshapes_vocabulary(sources),
        config.data.negatives,
    )


def _register_builtins() -> None:
    if "fgclip" in FAMILIES and "fgclip2" in FAMILIES:
        return
    from .data import build_fgclip_collator
    from .model import build_model

    for name, square in (("fgclip", True), ("fgclip2", False)):
        FAMILIES.setdefault(
            name,
            Family(
                name=name,
                tokenizer_layout=name,
                build_model=build_model,
                build_collator=build_fgclip_collator,
                square_images=square,
                loss_kwargs=_fgclip_loss_kwargs,
                build_validator=_fgclip_validator,
            ),
        )
