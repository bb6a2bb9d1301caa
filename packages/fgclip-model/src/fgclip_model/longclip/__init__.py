"""Long-CLIP (77 -> 248 positions) on transformers' ``CLIPModel``."""

from .convert import (
    KEEP_POSITIONS,
    LONG_CONTEXT,
    clip_to_longclip,
    config_from_openai_state_dict,
    export_longclip_state_dict,
    load_longclip_checkpoint,
    openai_to_hf_state_dict,
    read_state_dict,
)
from .stretch import stretch_positions, stretched_length

__all__ = [
    "KEEP_POSITIONS",
    "LONG_CONTEXT",
    "clip_to_longclip",
    "config_from_openai_state_dict",
    "export_longclip_state_dict",
    "load_longclip_checkpoint",
    "openai_to_hf_state_dict",
    "read_state_dict",
    "stretch_positions",
    "stretched_length",
]
