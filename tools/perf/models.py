"""The towers the harness times: fgclip and transformers models of identical configs and weights, and NaFlex inputs."""

from __future__ import annotations

import torch

from fgclip_model.tiny import tower


def clip_configs(tiny: bool) -> dict:
    """CLIP geometry: small towers, or OpenAI ViT-B/16 (text 512 x 12 x 8 heads, vision 768 x 12 x 12)."""
    text, vision = (tower(64, 2, 2), tower(64, 2, 2)) if tiny else (tower(512, 12, 8, 4), tower(768, 12, 12, 4))
    return {
        "text_config": {**text, "vocab_size": 49408, "max_position_embeddings": 77},
        "vision_config": {**vision, "image_size": 224, "patch_size": 16},
        "projection_dim": 64 if tiny else 512,
    }


def siglip2_config(tiny: bool):
    from transformers import Siglip2Config

    width = tower(64, 2, 2) if tiny else tower(768, 12, 12, 4)  # SigLIP 2 base
    return Siglip2Config(
        text_config={**width, "vocab_size": 32000, "max_position_embeddings": 64},
        vision_config={**width, "num_patches": 256, "patch_size": 16},
    )


def v1_pair(tiny: bool, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    torch.manual_seed(0)
    ours = FGCLIPModel(FGCLIPConfig(**clip_configs(tiny)))
    peer = CLIPModel(CLIPConfig(**clip_configs(tiny)))
    missing, _ = peer.load_state_dict(ours.state_dict(), strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing  # the same weights in both
    return ours.to(device, dtype).eval(), peer.to(device, dtype).eval()


def v2_pair(tiny: bool, device, dtype):
    from transformers import Siglip2Model

    from fgclip_model.fgclip2 import FGCLIP2Model

    torch.manual_seed(0)
    peer = Siglip2Model(siglip2_config(tiny)).eval()
    ours = FGCLIP2Model.from_siglip2(peer)  # same trunk weights; heads copied
    return ours.to(device, dtype).eval(), peer.to(device, dtype).eval()


def naflex_inputs(batch: int, side: int, patch: int, device, dtype):
    grid = side // patch
    n = grid * grid
    pixels = torch.randn(batch, n, 3 * patch * patch, device=device, dtype=dtype)
    mask = torch.ones(batch, n, dtype=torch.long, device=device)
    shapes = torch.tensor([[grid, grid]] * batch, device=device)
    return pixels, mask, shapes


def embedding_inputs(family: str, batch: int, device, dtype) -> list[tuple[str, dict, str]]:
    """(kind, keyword inputs, shape label) of the image and text embedding rows at ``batch``: 224 px images and
    77-token texts (ending in CLIP's end token, which FG-CLIP v1 pools) for ``"FG-CLIP v1"``; 256 NaFlex patches
    and 64-token texts for ``"FG-CLIP 2"``."""
    if family == "FG-CLIP v1":
        ids = torch.randint(0, 49000, (batch, 77), device=device)
        ids[:, -1] = 49407
        image = {"pixel_values": torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)}
        return [("image", image, f"B={batch}"), ("text", {"input_ids": ids}, f"B={batch} L=77")]
    pixels, mask, shapes = naflex_inputs(batch, 256, 16, device, dtype)
    image = {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}
    text = {"input_ids": torch.randint(2, 31000, (batch, 64), device=device)}
    return [("image", image, f"B={batch}"), ("text", text, f"B={batch} L=64")]
