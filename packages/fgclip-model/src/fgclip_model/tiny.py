"""Small transformer towers for models built from scratch: the tests, the benchmark's chance-level model and the
performance harness.

``tower(width, layers, heads, mlp)`` is the four numbers a tower needs (its MLP ``mlp`` times wider);
``fgclip_config`` / ``fgclip2_config`` build the families' configs around two such towers.
"""

from __future__ import annotations

from fgclip_model.fgclip import FGCLIPConfig
from fgclip_model.fgclip2 import FGCLIP2Config


def tower(width: int = 32, layers: int = 1, heads: int = 2, mlp: int = 2) -> dict[str, int]:
    """``hidden_size``, ``intermediate_size`` (``mlp`` × width), ``num_hidden_layers``, ``num_attention_heads``."""
    if width % heads:
        raise ValueError(f"width {width} is not divisible by {heads} heads")
    return {
        "hidden_size": width,
        "intermediate_size": mlp * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }


def fgclip_config(
    vocab_size: int = 49408,
    width: int = 32,
    layers: int = 1,
    heads: int = 2,
    image_size: int = 64,
    patch_size: int = 16,
    short_length: int = 77,
    long_length: int = 248,
    keep: int = 20,
    projection_dim: int | None = None,
) -> FGCLIPConfig:
    """A small FG-CLIP (v1): both towers ``tower(width, layers, heads)``, a short walk of ``short_length`` and a long
    walk of ``long_length`` tokens (the first ``keep`` positions shared)."""
    size = tower(width, layers, heads)
    return FGCLIPConfig(
        text_config={**size, "vocab_size": vocab_size, "max_position_embeddings": short_length},
        vision_config={**size, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim or width,
        long_max_position_embeddings=long_length,
        long_keep_positions=keep,
    )


def fgclip2_config(
    vocab_size: int = 1000,
    width: int = 32,
    layers: int = 1,
    heads: int = 2,
    num_patches: int = 64,
    patch_size: int = 16,
    short_length: int = 64,
    long_length: int = 196,
    keep: int = 20,
) -> FGCLIP2Config:
    """A small FG-CLIP 2: both towers ``tower(width, layers, heads)``, NaFlex patches of ``patch_size`` on a
    position grid of ``num_patches``, text walks of ``short_length`` / ``long_length`` tokens."""
    size = tower(width, layers, heads)
    return FGCLIP2Config(
        text_config={
            **size,
            "vocab_size": vocab_size,
            "max_position_embeddings": short_length,
            "longtext_len": long_length,
            "keep_len": keep,
            "projection_size": width,
        },
        vision_config={**size, "num_patches": num_patches, "patch_size": patch_size},
    )
