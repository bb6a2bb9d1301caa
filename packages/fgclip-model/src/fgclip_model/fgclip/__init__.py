"""FG-CLIP v1."""

from .configuration import FGCLIPConfig
from .modeling import FGCLIPModel, FGCLIPOutput, FGCLIPPreTrainedModel, FGCLIPStage2Output

__all__ = ["FGCLIPConfig", "FGCLIPModel", "FGCLIPOutput", "FGCLIPPreTrainedModel", "FGCLIPStage2Output"]
