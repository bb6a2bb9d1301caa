"""What building a model to train shares across families (each family module builds its own): the scratch size,
the finishing steps, activation checkpointing, DeepSpeed-friendly temperatures and the optimiser groups."""

from __future__ import annotations

import os
from functools import partial

import torch

from fgclip_data.tokenizer import vocab_size

from .adapters import TOWERS, add_lora, count_trainable, freeze_towers
from .config import TrainConfig


def scratch_size(config: TrainConfig, tokenizer, layout: str) -> dict:
    """``model.size`` as a config dict (copied), with the vocabulary size of ``tokenizer`` in the token
    ``layout`` (``fgclip_data.tokenizer.LAYOUTS``) unless set."""
    size = {k: dict(v) if isinstance(v, dict) else v for k, v in config.model.size.items()}
    text = size.setdefault("text_config", {})
    text.setdefault("vocab_size", vocab_size(tokenizer, layout))
    return size


def finish_model(config: TrainConfig, model: torch.nn.Module) -> torch.nn.Module:
    """What every FG-CLIP family's model gets before training: the region / hard-negative temperatures reset
    (``model.extra_logit_scale``), activation checkpointing when asked, 0-dim temperatures held as [1] for
    DeepSpeed, fp32 (DeepSpeed casts for bf16 runs; master weights stay fp32), train mode."""
    if config.model.extra_logit_scale is not None:
        with torch.no_grad():
            model.logit_scale_finegraind.fill_(config.model.extra_logit_scale)
            model.logit_scale_hardneg.fill_(config.model.extra_logit_scale)
    if config.model.gradient_checkpointing:
        enable_activation_checkpointing(model)
    promote_scalar_parameters(model)
    apply_adapters(config, model)
    return model.float().train()


def apply_adapters(config: TrainConfig, model: torch.nn.Module) -> None:
    """``model.freeze`` and ``model.lora``: freeze towers and / or add LoRA adapters, then say (on rank 0) how many
    parameters train."""
    freeze, lora = config.model.freeze, config.model.lora
    frozen = tuple(tower for tower, on in zip(TOWERS, (freeze.vision, freeze.text), strict=True) if on)
    if frozen:
        freeze_towers(model, frozen, freeze.unlocked_layers)
    if lora is not None:
        in_towers = tuple(f"{tower}." for tower in TOWERS)
        outside = tuple(name for name, _ in model.named_parameters() if not name.startswith(in_towers))
        add_lora(
            model,
            lora.rank,
            lora.alpha,
            lora.dropout,
            towers=tuple(lora.towers),
            modules=tuple(lora.modules),
            train=outside if lora.train_heads else (),
        )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[fgclip] {count_trainable(model)}", flush=True)


def bind_objective(model: torch.nn.Module, weights, switches) -> None:
    """Make ``model(batch)`` — the call the DeepSpeed engine makes, with its hooks — the training objective
    ``model.compute_loss(batch, weights, switches)`` for this run. The model's class keeps its inference
    ``forward``; only this instance is bound (as accelerate wraps ``forward`` for autocast)."""
    model.forward = partial(model.compute_loss, weights=weights, switches=switches)


def enable_activation_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (the towers run several times per step). transformers 5 renamed
    ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` and deprecated the old name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def promote_scalar_parameters(model: torch.nn.Module) -> list[str]:
    """Hold the 0-dim temperature parameters (``logit_scale``, ``logit_scale_finegraind`` ...) as shape [1]
    while training — DeepSpeed views every parameter as bytes to broadcast / partition it, which fails for 0-dim
    tensors — and keep them 0-dim in every state dict, so checkpoints keep the released layout."""
    names = [n for n, p in model.named_parameters(recurse=False) if p.dim() == 0]
    for name in names:
        old = getattr(model, name)
        setattr(model, name, torch.nn.Parameter(old.detach().reshape(1), requires_grad=old.requires_grad))

    def to_file(module, state, prefix, local_metadata):
        for name in names:  # (a ZeRO-3 partition can be empty: left as it is)
            if prefix + name in state and state[prefix + name].numel() == 1:
                state[prefix + name] = state[prefix + name].reshape(())

    def from_file(state, prefix, *args):
        for name in names:
            if prefix + name in state and state[prefix + name].dim() == 0:
                state[prefix + name] = state[prefix + name].reshape(1)

    model._register_state_dict_hook(to_file)
    model._register_load_state_dict_pre_hook(from_file)
    return names


def parameter_groups(model: torch.nn.Module, config: TrainConfig, no_decay_names: set[str] = frozenset()) -> list[dict]:
    """AdamW groups: decay / no-decay (biases, LayerNorm parameters and ``no_decay_names``; with
    ``optim.decay_embeddings_and_scales: false`` also embeddings, class token, probes and temperatures), split
    again for ``optim.text_lr``."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    exempt_words = ("embedding", "class_embedding", "probe", "logit_scale", "logit_bias")
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = "bias" in name or id(p) in norm_params or name in no_decay_names
        if not config.optim.decay_embeddings_and_scales and any(w in name for w in exempt_words):
            no_decay = True
        text = config.optim.text_lr is not None and name.startswith("text_model.")
        groups.setdefault((no_decay, text), []).append(p)
    out = []
    for (no_decay, text), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": 0.0 if no_decay else config.optim.weight_decay}
        if text:
            group["lr"] = config.optim.text_lr
        out.append(group)
    return out
