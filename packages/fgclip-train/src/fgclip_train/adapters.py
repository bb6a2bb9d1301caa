"""Cheap fine-tuning of a released checkpoint: tower freezing and LoRA (through peft), and the merge that folds
LoRA back into plain weights so every checkpoint a run writes loads like a released one.

Both FG-CLIP families name their towers ``vision_model`` / ``text_model`` with transformer blocks at
``<tower>.encoder.layers.{i}`` holding ``self_attn.{q,k,v,out}_proj`` and ``mlp.fc{1,2}`` (the CLIP / SigLIP
checkpoint layout), which is all this module relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

TOWERS = ("vision_model", "text_model")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
MLP_PROJECTIONS = ("fc1", "fc2")
LORA_ADAPTER = "default"  # peft's adapter name for the one adapter a run trains
_BEFORE_BLOCKS = tuple(f"{t}.{part}" for t in TOWERS for part in ("embeddings.", "pre_layrnorm."))  # CLIP's key
_LAYER = re.compile(r"^(?P<tower>vision_model|text_model)\.encoder\.layers\.(?P<index>\d+)\.")


@dataclass(frozen=True)
class TrainableCount:
    """How many parameters a run trains, of how many."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable parameters: {self.trainable:,} of {self.total:,} ({100 * self.share:.2f} %)"


def count_trainable(model: nn.Module) -> TrainableCount:
    """Trainable and total parameters (LoRA factors included in both)."""
    params = list(model.parameters())
    return TrainableCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def tower_depth(model: nn.Module, tower: str) -> int:
    """Number of transformer blocks of ``tower`` (``vision_model`` / ``text_model``)."""
    layers = getattr(model, tower).encoder.layers
    return len(layers)


def freeze_towers(model: nn.Module, towers: tuple[str, ...], unlocked_layers: int = 0) -> None:
    """Stop training every parameter of each tower in ``towers`` except its last ``unlocked_layers`` transformer
    blocks and what follows them (final norm, pooling head). open_clip's ``--lock-image`` / ``--lock-text`` with
    ``--lock-*-unlocked-layers``; the projections and temperatures outside the towers stay trainable."""
    for tower in towers:
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r} (known: {', '.join(TOWERS)})")
        depth = tower_depth(model, tower)
        if not 0 <= unlocked_layers <= depth:
            raise ValueError(f"unlocked_layers={unlocked_layers}: the {tower} has {depth} layers")
        first_unlocked = depth - unlocked_layers
        for name, param in getattr(model, tower).named_parameters(prefix=tower):
            match = _LAYER.match(name)
            if match is not None:
                param.requires_grad_(int(match["index"]) >= first_unlocked)
            elif unlocked_layers == 0 or name.startswith(_BEFORE_BLOCKS):
                param.requires_grad_(False)  # what precedes the blocks always; norms and heads after them when locked


def lora_targets(model: nn.Module, towers: tuple[str, ...], modules: tuple[str, ...]) -> list[str]:
    """The full names of the ``nn.Linear`` projections LoRA adapts: ``modules`` (e.g. ``q_proj``, ``fc1``) in
    the transformer blocks of ``towers``. Heads and pooling attention are left to be trained in full or frozen."""
    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and (match := _LAYER.match(name)) is not None
        and match["tower"] in towers
        and name.rsplit(".", 1)[-1] in modules
    ]
    if not found:
        raise ValueError(f"no {'/'.join(modules)} projection found in the blocks of {', '.join(towers)}")
    return found


def add_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    towers: tuple[str, ...] = TOWERS,
    modules: tuple[str, ...] = ATTENTION_PROJECTIONS + MLP_PROJECTIONS,
    train: tuple[str, ...] = (),
) -> list[str]:
    """Freeze ``model`` and inject LoRA adapters (peft) of ``rank`` / ``alpha`` into ``modules`` of ``towers``;
    parameters whose name starts with one of ``train`` stay trainable in full (e.g. projection heads,
    temperatures). Returns the adapted module names. The model keeps its class and methods."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # a dependency of fgclip-train: only a broken install gets here
        raise ImportError("LoRA fine-tuning needs peft: pip install peft") from err

    targets = lora_targets(model, towers, modules)
    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    inject_adapter_in_model(config, model, adapter_name=LORA_ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name or name.startswith(train))
    return targets


def lora_scalings(model: nn.Module) -> dict[str, float]:
    """``{module name: alpha / rank}`` of every LoRA-adapted projection of ``model`` (empty without LoRA)."""
    return {
        name: float(module.scaling[LORA_ADAPTER])
        for name, module in model.named_modules()
        if isinstance(getattr(module, "scaling", None), dict) and LORA_ADAPTER in module.scaling
    }


def merged_state_dict(state: dict[str, torch.Tensor], scalings: dict[str, float]) -> dict[str, torch.Tensor]:
    """A LoRA-adapted model's state dict with every adapter folded into its base weight (``W + s · B A``, ``s``
    from ``scalings``, see :func:`lora_scalings`) under the original key (``…q_proj.weight``), and the adapter
    and ``base_layer`` keys gone: the released checkpoint layout. Without adapters: an unchanged copy."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, _, leaf = key.rpartition(".base_layer.")
            if leaf == "weight":
                lora_a = state[f"{prefix}.lora_A.{LORA_ADAPTER}.weight"].to(value.dtype)
                lora_b = state[f"{prefix}.lora_B.{LORA_ADAPTER}.weight"].to(value.dtype)
                value = value + scalings[prefix] * (lora_b @ lora_a)
            key = f"{prefix}.{leaf}"
        merged[key] = value
    return merged
