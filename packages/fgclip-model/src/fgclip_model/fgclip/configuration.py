"""Configuration of FG-CLIP v1 (the released ``qihoo360/fg-clip-*`` layout: ``model_type: "clip"``)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig

CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407


@strict
class FGCLIPConfig(CLIPConfig):
    r"""FG-CLIP v1: a CLIP config (text / vision sub-configs of transformers' ``CLIPConfig``) plus the long-text
    geometry the released ``config.json`` files do not record.

    Attributes:
        text_config (`dict` or `CLIPTextConfig`): the text tower. ``max_position_embeddings`` (77) is the short
            table; ``bos/eos/pad`` ids are forced to 49406 / 49407 / 49407 as the reference model does.
        vision_config (`dict` or `CLIPVisionConfig`): the ViT (base: 224 px / patch 16; large: 336 px / patch 14).
        projection_dim (`int`): width of the joint embedding space.
        logit_scale_init_value (`float`): initial log temperature of all three logit scales.
        long_max_position_embeddings (`int`, defaults to 248): rows of the long position tables
            (``position_embedding_res`` / ``position_embedding_ori``); the longest long text.
        long_keep_positions (`int`, defaults to 20): the first positions of long text read from
            ``position_embedding_ori``; the rest read ``position_embedding_res``.
    """

    model_type = "clip"

    long_max_position_embeddings: int = 248
    long_keep_positions: int = 20

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.text_config.bos_token_id = CLIP_BOS_ID
        self.text_config.eos_token_id = CLIP_EOS_ID
        self.text_config.pad_token_id = CLIP_EOS_ID
        if not 0 < self.long_keep_positions <= self.text_config.max_position_embeddings:
            limit = self.text_config.max_position_embeddings
            raise ValueError(f"long_keep_positions={self.long_keep_positions} must be in 1..{limit}")
