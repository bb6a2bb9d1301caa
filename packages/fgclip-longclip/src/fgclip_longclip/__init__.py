"""fgclip-longclip: Long-CLIP fine-tuning (load_from_clip, Primary Component Matching)."""

from fgclip_longclip.__about__ import __version__
from fgclip_longclip.model import LongCLIPForPCM, PCMOutput, freeze_position_rows, load_from_clip

__all__ = ["LongCLIPForPCM", "PCMOutput", "__version__", "freeze_position_rows", "load_from_clip"]
