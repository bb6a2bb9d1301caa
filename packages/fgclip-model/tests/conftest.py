"""Tiny randomly initialised FG-CLIP v1 models for property tests."""

from __future__ import annotations

import pytest
import torch

from fgclip_model import FGCLIPConfig, FGCLIPModel


def tiny_config(image_size: int = 64, patch_size: int = 16) -> FGCLIPConfig:
    return FGCLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=16,
    )


@pytest.fixture
def tiny_model() -> FGCLIPModel:
    torch.manual_seed(0)
    return FGCLIPModel(tiny_config()).eval()
