"""fgclip-model: FG-CLIP v1, FG-CLIP 2 and Long-CLIP as checkpoint-compatible transformers models.

``import fgclip_model`` registers the models with the transformers Auto classes (no ``trust_remote_code``).
"""

from fgclip_model.__about__ import __version__
from fgclip_model.auto import detect_family, load, register_auto_classes
from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel, FGCLIPOutput, FGCLIPStage2Output
from fgclip_model.longclip import (
    clip_to_longclip,
    export_longclip_state_dict,
    load_longclip_checkpoint,
    stretch_positions,
)

register_auto_classes()

__all__ = [
    "FGCLIPConfig",
    "FGCLIPModel",
    "FGCLIPOutput",
    "FGCLIPStage2Output",
    "__version__",
    "clip_to_longclip",
    "detect_family",
    "export_longclip_state_dict",
    "load",
    "load_longclip_checkpoint",
    "register_auto_classes",
    "stretch_positions",
]
