"""``fgclip-model export onnx``: image and text encoders of both families run in ONNX Runtime with the
embeddings of PyTorch (max abs diff ≤ 1e-4), FG-CLIP 2 with other patch budgets and mixed image shapes than the
export's example, FG-CLIP with other text lengths."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

import fgclip_model
from fgclip_model.cli import main
from fgclip_model.export import run_onnx

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def v2_export(golden, gemma_like_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fgclip2")
    model_dir = folder / "model"
    shutil.copytree(golden / "v2_s1_fixed" / "model", model_dir)
    gemma_like_tokenizer.save_pretrained(model_dir)
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(folder / "onnx")]) == 0
    return model_dir, folder / "onnx"


def test_fgclip2_export_files_and_manifest(v2_export, capsys):
    _, out = v2_export
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == "fgclip2"
    assert set(manifest["graphs"]) == {"image", "text_short", "text_box", "text_long"}
    assert all(diff <= 1e-4 for diff in manifest["max_abs_diff_vs_pytorch"].values())
    assert (out / "tokenizer_config.json").is_file() and (out / "preprocessor_config.json").is_file()
    batch, patches, channels = manifest["graphs"]["image"]["inputs"]["pixel_values"]
    assert (batch, patches) == ("batch", "patches") and isinstance(channels, int)  # dynamic batch and patch budget


@torch.no_grad()
def test_fgclip2_image_graph_takes_any_patch_budget_and_mixed_shapes(v2_export, golden):
    model_dir, out = v2_export
    model, processor = fgclip_model.load(model_dir)
    images = [Image.open(golden / "v2_s1_fixed" / f"image_{i}.png").convert("RGB") for i in range(3)]
    images.append(images[0].resize((300, 40)))  # a very wide image: a grid far from the example's square
    for budget in (16, 49, 256):
        processor.image_processor.dynamic_max_patches = False
        inputs = processor(images=images, max_num_patches=budget, return_tensors="pt")
        assert inputs["pixel_values"].shape[1] == budget
        expected = model.get_image_features(**inputs)
        assert (run_onnx(out / "image.onnx", inputs) - expected).abs().max() <= 1e-4, budget
        shapes = inputs["spatial_shapes"].tolist()
    assert len({tuple(s) for s in shapes}) > 1  # the batch really mixed grids


@torch.no_grad()
def test_fgclip2_text_walks(v2_export):
    model_dir, out = v2_export
    model, processor = fgclip_model.load(model_dir)
    texts = ["a red square", "two small green triangles left of a blue circle", "a photo"]
    for walk in ("short", "box", "long"):
        inputs = processor(text=texts, walk_type=walk, return_tensors="pt")
        inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
        expected = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], walk_type=walk)
        assert (run_onnx(out / f"text_{walk}.onnx", inputs) - expected).abs().max() <= 1e-4, walk


@pytest.mark.slow  # ONNX export of every walk at other lengths
@torch.no_grad()
def test_fgclip_v1_export_with_other_text_lengths(golden, tmp_path):
    from fgclip_model import FGCLIPModel
    from fgclip_model.export import export_onnx

    model = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()
    result = export_onnx(model, tmp_path)
    assert max(result.max_abs_diff.values()) <= 1e-4
    size = model.config.vision_config.image_size
    pixels = torch.randn(5, 3, size, size)
    assert (
        run_onnx(tmp_path / "image.onnx", {"pixel_values": pixels}) - model.get_image_features(pixels)
    ).abs().max() <= 1e-4
    for walk, length in (("short", 9), ("long", 120)):
        ids = torch.randint(1, 1000, (3, length))
        ids[:, -1] = model.config.text_config.eos_token_id
        mask = torch.ones_like(ids)
        mask[0, length // 2 :] = 0
        expected = model.get_text_features(ids, mask, walk_type=walk)
        got = run_onnx(tmp_path / f"text_{walk}.onnx", {"input_ids": ids, "attention_mask": mask})
        assert (got - expected).abs().max() <= 1e-4, walk


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "onnx", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
