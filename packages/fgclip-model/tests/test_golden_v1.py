"""FG-CLIP v1 against the reference implementation's outputs (tests/fixtures/golden/v1_s0, fp32)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import fgclip_model  # noqa: F401  (registers the Auto classes)
from fgclip_data import Stage2Batch
from fgclip_model import FGCLIPModel

TOL = {"atol": 2e-5, "rtol": 1e-4}
LOSS_TOL = {"atol": 1e-5, "rtol": 0}


@pytest.fixture(scope="module")
def io(golden):
    return load_file(golden / "v1_s0" / "io.safetensors")


@pytest.fixture(scope="module")
def model(golden):
    return FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()


@torch.no_grad()
def test_global_features(model, io):
    torch.testing.assert_close(model.get_image_features(io["pixel_values"]), io["image_embeds"], **TOL)
    short = model.get_text_features(io["input_ids_short"], walk_short_pos=True)
    long = model.get_text_features(io["input_ids_long"], walk_short_pos=False)
    box = model.get_text_features(io["input_ids_short"], walk_short_pos=True, use_bbox=True)
    torch.testing.assert_close(short, io["text_embeds_short"], **TOL)
    torch.testing.assert_close(long, io["text_embeds_long"], **TOL)
    torch.testing.assert_close(box, io["text_embeds_box"], **TOL)
    # the walk_type spelling gives the same numbers
    torch.testing.assert_close(model.get_text_features(io["input_ids_long"], walk_type="long"), long, atol=0, rtol=0)
    torch.testing.assert_close(model.get_text_features(io["input_ids_short"], walk_type="box"), box, atol=0, rtol=0)


@torch.no_grad()
def test_dense_and_roi_features(model, io):
    torch.testing.assert_close(model.get_image_dense_features(io["pixel_values"]), io["dense_features"], **TOL)
    boxes = [io["boxes_0"], io["boxes_1"], io["boxes_2"]]
    torch.testing.assert_close(
        model.get_image_box_roi_features(io["pixel_values"], box_info=boxes), io["roi_features"], **TOL
    )
    # one tensor per image from the normalised-box API (4x4 grid: grid units / 4)
    regions = model.get_image_region_features(io["pixel_values"], [b / 4 for b in boxes])
    assert [r.shape[0] for r in regions] == [len(b) for b in boxes]
    torch.testing.assert_close(torch.cat(regions), io["roi_features"], **TOL)
    # global and region features from one pass of the vision tower (what validation uses)
    image, regions = model.get_image_and_region_features(io["pixel_values"], [b / 4 for b in boxes])
    torch.testing.assert_close(image, io["image_embeds"], **TOL)
    assert [r.shape[0] for r in regions] == [len(b) for b in boxes]
    torch.testing.assert_close(torch.cat(regions), io["roi_features"], **TOL)
    with pytest.raises(ValueError, match="box lists for 3 images"):
        model.get_image_and_region_features(io["pixel_values"], [b / 4 for b in boxes[:2]])


def _batch(io, full: bool) -> dict:
    batch = {"pixel_values": io["pixel_values"], "text_long": io["input_ids_long"], "text_short": io["input_ids_short"]}
    if full:
        batch.update(
            box_infos=io["box_infos"],
            box_texts=io["box_texts"],
            box_nums=io["box_nums"],
            hard_infos=io["hard_infos"],
            hard_texts=io["hard_texts"],
            hard_nums=io["hard_nums"],
        )
    return batch


@torch.no_grad()
def test_stage2_losses(model, io):
    out = model.compute_loss(Stage2Batch(**_batch(io, full=False)))
    torch.testing.assert_close(out.loss_long + out.loss_short, io["loss_global"][0], **LOSS_TOL)
    torch.testing.assert_close(out.loss, io["loss_global"][0], **LOSS_TOL)
    out = model.compute_loss(Stage2Batch(**_batch(io, full=True)))
    torch.testing.assert_close(out.loss, io["loss_total"][0], **LOSS_TOL)
    recombined = out.loss_long + out.loss_short + 0.1 * out.loss_region + 0.5 * out.loss_hard
    torch.testing.assert_close(recombined, out.loss, atol=1e-6, rtol=0)


@torch.no_grad()
def test_hard_texts_as_groups_equal_flat(model, io):
    batch = _batch(io, full=True)
    flat = model.compute_loss(Stage2Batch(**batch)).loss_hard
    batch["hard_texts"] = io["hard_texts"].reshape(5, 11, 77)
    torch.testing.assert_close(model.compute_loss(Stage2Batch(**batch)).loss_hard, flat, atol=1e-6, rtol=0)


def test_loads_through_automodel_without_remote_code(golden, io):
    model = AutoModel.from_pretrained(golden / "v1_s0" / "model", trust_remote_code=False).eval()
    assert type(model) is FGCLIPModel
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(io["pixel_values"]), io["image_embeds"], **TOL)


def test_save_pretrained_round_trip(model, io, tmp_path):
    model.save_pretrained(tmp_path)
    again = FGCLIPModel.from_pretrained(tmp_path).eval()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2
        torch.testing.assert_close(v1, v2, atol=0, rtol=0)
    assert again.config.architectures == ["FGCLIPModel"] and again.config.model_type == "clip"
