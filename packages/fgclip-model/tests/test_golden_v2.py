"""FG-CLIP 2 against the reference implementation (tests/fixtures/golden/v2_*; fp32 on CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoProcessor

import fgclip_model
from fgclip_model.fgclip2 import FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
from fgclip_model.fgclip2.processing import FGCLIP2Processor

TOL = {"atol": 2e-5, "rtol": 1e-4}
CASES = {"v2_s0_dynamic": True, "v2_s1_fixed": False}


def _case(golden, name):
    folder = golden / name
    return folder, load_file(folder / "io.safetensors"), json.loads((folder / "meta.json").read_text())


@pytest.mark.parametrize("name", CASES)
def test_image_processor_reproduces_reference(golden, name):
    folder, io, meta = _case(golden, name)
    images = [Image.open(folder / f"image_{i}.png") for i in range(3)]
    assert [(im.height, im.width) for im in images] == [tuple(s) for s in meta["image_sizes_hw"]]
    out = FGCLIP2ImageProcessor()(
        images, max_num_patches=meta["max_num_patches"], dynamic_max_patches=CASES[name], return_tensors="pt"
    )
    for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes"):
        assert out[key].dtype == io[key].dtype, key
        torch.testing.assert_close(out[key], io[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_model_outputs(golden, name):
    folder, io, meta = _case(golden, name)
    model = FGCLIP2Model.from_pretrained(folder / "model").eval()
    image = (io["pixel_values"], io["pixel_attention_mask"], io["spatial_shapes"])
    torch.testing.assert_close(model.get_image_features(*image), io["image_embeds"], **TOL)
    for walk in ("short", "box"):
        got = model.get_text_features(io["input_ids_short"], walk_type=walk)
        torch.testing.assert_close(got, io[f"text_embeds_{walk}"], **TOL)
    torch.testing.assert_close(
        model.get_text_features(io["input_ids_long"], walk_type="long"), io["text_embeds_long"], **TOL
    )
    torch.testing.assert_close(model.get_image_dense_feature(*image), io["dense_features"], **TOL)
    regions = model.get_image_region_features(
        *image, image_sizes=meta["image_sizes_hw"], region_infos=meta["regions_xyxy_pixels"]
    )
    assert len(regions) == 3
    for i, region in enumerate(regions):
        assert region.shape == io[f"region_features_{i}"].shape
        torch.testing.assert_close(region, io[f"region_features_{i}"], **TOL)
    # global and region features from one pass of the vision tower (what validation uses): normalised boxes
    shapes = meta["image_sizes_hw"]
    boxes = [
        torch.tensor(b).reshape(-1, 4) / torch.tensor([w, h, w, h])
        for b, (h, w) in zip(meta["regions_xyxy_pixels"], shapes, strict=True)
    ]
    embeds, regions = model.get_image_and_region_features(*image, boxes=boxes)
    torch.testing.assert_close(embeds, io["image_embeds"], **TOL)
    for i, region in enumerate(regions):
        torch.testing.assert_close(region, io[f"region_features_{i}"], **TOL)
    with pytest.raises(ValueError, match="one box list per image"):
        model.get_image_and_region_features(*image, boxes=boxes[:2])
    out = model(
        input_ids=io["input_ids_short"], pixel_values=image[0], pixel_attention_mask=image[1], spatial_shapes=image[2]
    )
    torch.testing.assert_close(out.logits_per_image, io["logits_per_image"], **TOL)
    torch.testing.assert_close(out.logits_per_text, io["logits_per_image"].T, **TOL)


def test_reference_eval_roi_api_is_normalised_and_matches(golden):
    folder, io, meta = _case(golden, "v2_s0_dynamic")
    model = FGCLIP2Model.from_pretrained(folder / "model").eval()
    image = (io["pixel_values"], io["pixel_attention_mask"], io["spatial_shapes"])
    shapes = io["spatial_shapes"].tolist()
    box_info = []
    for (h, w), boxes, (height, width) in zip(shapes, meta["regions_xyxy_pixels"], meta["image_sizes_hw"], strict=True):
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([w / width, h / height] * 2)
        box_info.append(torch.cat([torch.zeros(len(b), 1), b], dim=1))
    with torch.no_grad():
        got = model.get_image_box_roi_features(*image, box_info=box_info)
    want = torch.nn.functional.normalize(torch.cat([io[f"region_features_{i}"] for i in range(3)]), dim=-1)
    torch.testing.assert_close(got, want, **TOL)


def test_auto_classes_and_load_without_remote_code(golden, tmp_path, gemma_like_tokenizer):
    folder, _, _ = _case(golden, "v2_s1_fixed")
    model = AutoModel.from_pretrained(folder / "model", trust_remote_code=False)
    assert type(model) is FGCLIP2Model
    checkpoint = tmp_path / "fgclip2-tiny"
    model.save_pretrained(checkpoint)
    FGCLIP2ImageProcessor(max_num_patches=64).save_pretrained(checkpoint)
    gemma_like_tokenizer.save_pretrained(checkpoint)
    assert isinstance(AutoImageProcessor.from_pretrained(checkpoint), FGCLIP2ImageProcessor)
    assert isinstance(AutoProcessor.from_pretrained(checkpoint), FGCLIP2Processor)
    loaded, processor = fgclip_model.load(checkpoint)
    assert isinstance(loaded, FGCLIP2Model) and isinstance(processor, FGCLIP2Processor)
    assert fgclip_model.detect_family(checkpoint) == "fgclip2"
    inputs = processor(text=["Two RED squares"], images=[Image.open(folder / "image_0.png")], walk_type="long")
    assert inputs["input_ids"].shape == (1, 196)  # padded to the long walk's length by default
    assert inputs["pixel_values"].shape[1] == 128  # dynamic bucket of a 96x160 image
    with torch.no_grad():
        out = loaded(**{k: v for k, v in inputs.items() if k != "attention_mask"}, walk_type="long")
    assert out.logits_per_image.shape == (1, 1)


@torch.no_grad()
def test_trainer_checkpoint_with_extra_temperatures(golden):
    """The reference trainer saves architectures FG_CLIP2_Model and two extra scalars: both load."""
    folder, _, meta = _case(golden, "v2_loss_s1")
    assert json.loads((folder / "model" / "config.json").read_text())["architectures"] == ["FG_CLIP2_Model"]
    model = FGCLIP2Model.from_pretrained(folder / "model")
    torch.testing.assert_close(model.logit_scale_finegraind, torch.tensor(meta["logit_scale_finegraind"]))
    torch.testing.assert_close(model.logit_scale_hardneg, torch.tensor(meta["logit_scale_hardneg"]))
    # inference checkpoints lack them: they start at ln 100, as the reference trainer attaches them
    plain = FGCLIP2Model.from_pretrained(golden / "v2_s0_dynamic" / "model")
    assert plain.logit_scale_finegraind.item() == pytest.approx(4.6052)
    assert plain.logit_scale_hardneg.item() == pytest.approx(4.6052)
