"""fgclip-model: FG-CLIP v1, FG-CLIP 2 and Long-CLIP as checkpoint-compatible transformers models.

``import fgclip_model`` registers the models with the transformers Auto classes (no ``trust_remote_code``).
"""

from fgclip_model.__about__ import __version__
from fgclip_model.auto import (
    FAMILIES,
    ModelFamily,
    detect_family,
    get_model_family,
    register_auto_classes,
    register_model_family,
    resolve,
)
from fgclip_model.backends import load
from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel, FGCLIPOutput, FGCLIPStage2Output
from fgclip_model.fgclip.processing import FGCLIPProcessor
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
from fgclip_model.fgclip2.processing import FGCLIP2Processor
from fgclip_model.longclip import (
    clip_to_longclip,
    export_longclip_state_dict,
    load_longclip_checkpoint,
    stretch_positions,
)
from fgclip_model.longclip.processing import LongCLIPProcessor

register_auto_classes()

__all__ = [
    "FAMILIES",
    "FGCLIP2Config",
    "FGCLIP2ImageProcessor",
    "FGCLIP2Model",
    "FGCLIP2Processor",
    "FGCLIPConfig",
    "FGCLIPModel",
    "FGCLIPOutput",
    "FGCLIPProcessor",
    "FGCLIPStage2Output",
    "LongCLIPProcessor",
    "ModelFamily",
    "__version__",
    "clip_to_longclip",
    "detect_family",
    "export_longclip_state_dict",
    "get_model_family",
    "load",
    "load_longclip_checkpoint",
    "register_auto_classes",
    "register_model_family",
    "resolve",
    "stretch_positions",
]
