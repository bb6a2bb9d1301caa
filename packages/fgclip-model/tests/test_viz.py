"""The dense similarity map helper and its heatmap figure."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from PIL import Image

import fgclip_model
from fgclip_model.viz import dense_similarity, plot_similarity_map, similarity_map


def test_similarity_map_is_patch_cosine():
    dense = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0], [9.0, 9.0]])  # last row: padding
    sim = similarity_map(dense, torch.tensor([2.0, 0.0]), (2, 2))
    torch.testing.assert_close(sim, torch.tensor([[1.0, 0.0], [-1.0, 2**-0.5]]))


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))


def test_v1_and_v2_maps_render_to_png(golden, tmp_path, clip_tokenizer, gemma_like_tokenizer):
    v1 = tmp_path / "v1"
    shutil.copytree(golden / "v1_s0" / "model", v1)
    clip_tokenizer.save_pretrained(v1)
    model, processor = fgclip_model.load(v1)
    sim = dense_similarity(model, processor, _image(), "a red square")
    assert sim.shape == (4, 4) and sim.abs().max() <= 1 + 1e-6

    v2 = tmp_path / "v2"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", v2)
    gemma_like_tokenizer.save_pretrained(v2)
    model2, processor2 = fgclip_model.load(v2)
    sim2 = dense_similarity(model2, processor2, _image(), "a red square")
    assert sim2.shape == (9, 14)  # NaFlex grid of an 80x120 image in the 128-patch bucket (up-scaled)

    out = tmp_path / "map.png"
    fig = plot_similarity_map(_image(), sim2, out, title="a red square")
    assert fig is not None
    png = Image.open(out)
    assert png.format == "PNG" and png.width > 200 and png.height > 100
