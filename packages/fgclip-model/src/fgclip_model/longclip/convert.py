"""Long-CLIP <-> transformers ``CLIPModel`` conversion.

* :func:`clip_to_longclip` stretches an HF ``CLIPModel`` (77 positions) into a Long-CLIP ``CLIPModel`` (248).
* :func:`load_longclip_checkpoint` reads an original Long-CLIP (or OpenAI) ``.pt`` state dict and returns an HF
  ``CLIPModel`` (the effective position table is rows ``0..keep-1`` of ``positional_embedding`` and rows
  ``keep..`` of ``positional_embedding_res``); an OpenAI 77-row table is stretched to 248.
* :func:`export_longclip_state_dict` is the inverse: an HF ``CLIPModel`` -> the original key layout.

Files are read with ``torch.load(weights_only=True)``: no code from a checkpoint is executed.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import torch
from transformers import CLIPConfig, CLIPModel

from fgclip_model.loading import unsupported_global

from .stretch import stretch_positions

LONG_CONTEXT = 248
KEEP_POSITIONS = 20
HEAD_WIDTH = 64  # OpenAI CLIP: heads = width / 64

# OpenAI block sub-keys -> HF encoder-layer sub-keys (the packed in_proj is handled separately)
_BLOCK_KEYS = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PLAIN_KEYS = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_TOWERS = {
    "transformer.resblocks.": "text_model.encoder.layers.",
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
}


def clip_to_longclip(model: CLIPModel, new_length: int = LONG_CONTEXT, keep: int = KEEP_POSITIONS) -> CLIPModel:
    """A new ``CLIPModel`` whose text position table is ``model``'s, stretched to ``new_length`` rows."""
    config = CLIPConfig.from_dict(model.config.to_dict())
    config.text_config.max_position_embeddings = new_length
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    key = "text_model.embeddings.position_embedding.weight"
    state[key] = stretch_positions(state[key], new_length, keep)
    long_model = CLIPModel(config).to(dtype=model.dtype)
    long_model.load_state_dict(state, strict=False)
    _check_complete(long_model, state)
    return long_model.eval()


def _check_complete(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"state dict does not fit CLIPModel: missing {missing}, unexpected {unexpected}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a ``.pt`` state dict safely (``weights_only``); a ``{"state_dict": ...}`` wrapper is unwrapped."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) serialisation
    except RuntimeError as err:
        if "TorchScript" in str(err) or "constants.pkl" in str(err):
            raise ValueError(
                f"{path} is a TorchScript archive (OpenAI's original release). fgclip does not execute "
                "checkpoint code; load it with the HF copy of the model and use clip_to_longclip instead"
            ) from err
        raise ValueError(f"{path} is not a readable PyTorch state dict ({err})") from err
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} refused: it holds objects other than tensors and plain containers, which only code execution "
            f"could rebuild (fgclip loads weights with weights_only=True){unsupported_global(err)}"
        ) from err
    except (EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is truncated or not a PyTorch file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if "token_embedding.weight" not in state or "visual.conv1.weight" not in state:
        raise ValueError(f"{path} is not an OpenAI / Long-CLIP ViT state dict (no token_embedding / visual.conv1)")
    return state


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def config_from_openai_state_dict(state: Mapping[str, torch.Tensor], context_length: int | None = None) -> CLIPConfig:
    """Infer the CLIP geometry from an OpenAI-layout state dict (heads = width / 64, as OpenAI)."""
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    text_config = {
        "vocab_size": state["token_embedding.weight"].shape[0],
        "hidden_size": text_width,
        "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_blocks(state, "transformer.resblocks."),
        "num_attention_heads": max(1, text_width // HEAD_WIDTH),
        "max_position_embeddings": context_length or state["positional_embedding"].shape[0],
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
    }
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _count_blocks(state, "visual.transformer.resblocks."),
        "num_attention_heads": max(1, vision_width // HEAD_WIDTH),
        "image_size": patch * grid,
        "patch_size": patch,
        "hidden_act": "quick_gelu",
    }
    return CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=state["text_projection"].shape[1]
    )


def openai_to_hf_state_dict(state: Mapping[str, torch.Tensor], keep: int = KEEP_POSITIONS) -> dict[str, torch.Tensor]:
    """Rename an OpenAI / Long-CLIP state dict to HF ``CLIPModel`` keys (effective Long-CLIP position table)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _PLAIN_KEYS:
            out[_PLAIN_KEYS[key]] = value
            continue
        for src, dst in sorted(_TOWERS.items(), key=lambda kv: -len(kv[0])):
            if key.startswith(src):
                index, sub = key[len(src) :].split(".", 1)
                base = f"{dst}{index}."
                if sub in ("attn.in_proj_weight", "attn.in_proj_bias"):
                    kind = "weight" if sub.endswith("weight") else "bias"
                    for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                        out[f"{base}self_attn.{name}.{kind}"] = part
                elif sub in _BLOCK_KEYS:
                    out[base + _BLOCK_KEYS[sub]] = value
                else:
                    raise ValueError(f"unknown key {key!r} in an OpenAI CLIP state dict")
                break
    out["text_projection.weight"] = state["text_projection"].T.contiguous()
    out["visual_projection.weight"] = state["visual.proj"].T.contiguous()
    table = state["positional_embedding"]
    if "positional_embedding_res" in state:
        table = torch.cat([table[:keep], state["positional_embedding_res"][keep:]])
    out["text_model.embeddings.position_embedding.weight"] = table
    return out


def load_longclip_checkpoint(
    path: str | os.PathLike, new_length: int | None = LONG_CONTEXT, keep: int = KEEP_POSITIONS
) -> CLIPModel:
    """An original Long-CLIP ``.pt`` (or an OpenAI 77-position state dict, stretched to ``new_length``; ``None``
    keeps the file's table) -> HF ``CLIPModel`` in fp32."""
    state = read_state_dict(path)
    hf_state = {k: v.float() for k, v in openai_to_hf_state_dict(state, keep).items()}
    table_key = "text_model.embeddings.position_embedding.weight"
    if new_length is not None and hf_state[table_key].shape[0] != new_length:
        hf_state[table_key] = stretch_positions(hf_state[table_key], new_length, keep)
    config = config_from_openai_state_dict(state, context_length=hf_state[table_key].shape[0])
    model = CLIPModel(config)
    _check_complete(model, hf_state)
    model.load_state_dict(hf_state, strict=False)
    return model.eval()


def export_longclip_state_dict(model: CLIPModel) -> dict[str, torch.Tensor]:
    """An HF ``CLIPModel`` -> the original Long-CLIP key layout (both position tables hold the effective table)."""
    inverse_plain = {v: k for k, v in _PLAIN_KEYS.items()}
    inverse_block = {v: k for k, v in _BLOCK_KEYS.items()}
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in inverse_plain:
            out[inverse_plain[key]] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value.clone()
            out["positional_embedding_res"] = value.clone()
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
        else:
            tower = next(((src, dst) for src, dst in _TOWERS.items() if key.startswith(dst)), None)
            if tower is None:
                raise ValueError(f"unexpected key {key!r} in CLIPModel")
            src, dst = tower
            index, sub = key[len(dst) :].split(".", 1)
            if sub.split(".")[:2] in (["self_attn", "q_proj"], ["self_attn", "k_proj"], ["self_attn", "v_proj"]):
                continue  # packed into in_proj below
            out[f"{src}{index}.{inverse_block[sub]}"] = value
    for src, dst in _TOWERS.items():
        layers = _count_blocks(state, dst)
        for i in range(layers):
            for kind in ("weight", "bias"):
                parts = [state[f"{dst}{i}.self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
                out[f"{src}{i}.attn.in_proj_{kind}"] = torch.cat(parts)
    return out
