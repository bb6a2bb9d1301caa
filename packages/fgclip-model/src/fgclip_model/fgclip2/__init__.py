"""FG-CLIP 2 (SigLIP 2 NaFlex based, bilingual)."""

from .configuration import FGCLIP2Config, FGCLIP2TextConfig, FGCLIP2VisionConfig, fgclip2_config_from_siglip2
from .modeling import (
    FGCLIP2Model,
    FGCLIP2Output,
    FGCLIP2PreTrainedModel,
    FGCLIP2Stage2Output,
)

__all__ = [
    "FGCLIP2Config",
    "FGCLIP2Model",
    "FGCLIP2Output",
    "FGCLIP2PreTrainedModel",
    "FGCLIP2Stage2Output",
    "FGCLIP2TextConfig",
    "FGCLIP2VisionConfig",
    "fgclip2_config_from_siglip2",
]
