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


def test_explicit_patch_budget_is_honoured_and_captions_share_one_figure(golden, tmp_path, gemma_like_tokenizer):
    """The FG-CLIP 2 README's 2K demo asks for 16384 patches; the reference processor capped it at its bucket."""
    from fgclip_model.viz import plot_similarity_maps

    v2 = tmp_path / "v2"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", v2)
    gemma_like_tokenizer.save_pretrained(v2)
    model, processor = fgclip_model.load(v2)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    assert dense_similarity(model, processor, image, "a red square").numel() <= 1024  # the dynamic bucket
    captions = ["a red square", "a blue circle", "two small triangle"]
    sims = dense_similarity(model, processor, image, captions, max_num_patches=4096)
    assert sims.shape[0] == 3 and 3600 < sims[0].numel() <= 4096  # 48 x 85 patches, not the 1024 cap
    torch.testing.assert_close(sims[1], dense_similarity(model, processor, image, captions[1], max_num_patches=4096))

    out = tmp_path / "grid.png"
    plot_similarity_maps(image, sims, captions, out, columns=2)
    png = Image.open(out)
    assert png.format == "PNG" and png.width >= 700 and png.height >= 700  # 2 x 2 panels
