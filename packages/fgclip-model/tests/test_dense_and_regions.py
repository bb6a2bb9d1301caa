"""Dense features (the attention-free last block) and RoI / region features as the reference computes them."""

from __future__ import annotations

import pytest
import torch

from fgclip_model.regions import boxes_with_batch_index


@torch.no_grad()
def test_dense_path_is_last_block_without_attention(tiny_model):
    """F = visual_projection(post_LN(block_without_attn(hidden_states[-2])))[:, 1:], written out by hand."""
    vm = tiny_model.vision_model
    x = torch.randn(2, 3, 64, 64)
    h = vm.pre_layrnorm(vm.embeddings(x)[0])
    for layer in vm.encoder.layers[:-1]:
        h = layer(h)[0]  # (hidden states, attention weights or None)
    last = vm.encoder.layers[-1]
    y = h + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(h)))
    z = y + last.mlp.fc2(last.mlp.activation_fn(last.mlp.fc1(last.layer_norm2(y))))
    expected = tiny_model.visual_projection(vm.post_layernorm(z[:, 1:]))
    torch.testing.assert_close(tiny_model.get_image_dense_features(x), expected, atol=1e-6, rtol=1e-5)
    assert expected.shape == (2, 16, 16)


@torch.no_grad()
def test_roi_invariants(tiny_model):
    x = torch.randn(1, 3, 64, 64)
    dense = tiny_model.get_image_dense_features(x)[0]  # [16, P], 4x4 grid
    full = tiny_model.get_image_box_roi_features(x, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])])
    torch.testing.assert_close(full[0], dense.mean(0), atol=1e-6, rtol=1e-5)
    r, c = 2, 1
    patch = tiny_model.get_image_box_roi_features(x, [torch.tensor([[c, r, c + 1.0, r + 1.0]])])
    torch.testing.assert_close(patch[0], dense[r * 4 + c], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_region_features_per_image_and_pixel_boxes(tiny_model):
    x = torch.randn(3, 3, 64, 64)
    sizes = [(100, 200), (64, 64), (300, 150)]
    pixel_boxes = [
        torch.tensor([[0.0, 0.0, 200.0, 100.0], [50.0, 25.0, 150.0, 75.0]]),
        torch.zeros(0, 4),
        torch.tensor([[15.0, 30.0, 75.0, 150.0]]),
    ]
    normalised = [b / torch.tensor([w, h, w, h]) for b, (h, w) in zip(pixel_boxes, sizes, strict=True)]
    by_pixels = tiny_model.get_image_region_features(x, pixel_boxes, image_sizes=sizes)
    by_norm = tiny_model.get_image_region_features(x, normalised)
    assert [r.shape for r in by_pixels] == [(2, 16), (0, 16), (1, 16)]
    for a, b in zip(by_pixels, by_norm, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the [K, 5] reference form with grid units gives the same rows
    rois = boxes_with_batch_index([b * 4 for b in normalised])
    torch.testing.assert_close(torch.cat(by_norm), tiny_model.get_image_box_roi_features(x, rois), atol=1e-6, rtol=1e-5)


def test_bad_boxes_are_clear_errors(tiny_model):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="x2 < x1"):
        tiny_model.get_image_region_features(x, [torch.tensor([[0.5, 0.1, 0.2, 0.9]])])
    with pytest.raises(ValueError, match="box lists for 1 images"):
        tiny_model.get_image_region_features(x, [torch.zeros(0, 4), torch.zeros(0, 4)])
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        tiny_model.get_image_box_roi_features(x, torch.zeros(3, 4))


def test_interpolated_positions_for_other_sizes(tiny_model):
    x = torch.randn(1, 3, 96, 64, requires_grad=False)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        tiny_model.get_image_features(x)
    dense = tiny_model.get_image_dense_features(x, interpolate_pos_encoding=True)
    assert dense.shape == (1, 6 * 4, 16)
    # non-square grid: the full box still averages every patch
    full = tiny_model.get_image_region_features(
        x, [torch.tensor([[0.0, 0.0, 1.0, 1.0]])], interpolate_pos_encoding=True
    )
    torch.testing.assert_close(full[0][0], dense[0].mean(0), atol=1e-5, rtol=1e-5)
    # differentiable (the reference read .weight.data)
    tiny_model.zero_grad()
    tiny_model.get_image_features(x, interpolate_pos_encoding=True).sum().backward()
    assert tiny_model.vision_model.embeddings.position_embedding.weight.grad.abs().sum() > 0
    # the stored size takes the stored table, untouched
    same = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        tiny_model.get_image_features(same, interpolate_pos_encoding=True), tiny_model.get_image_features(same)
    )


@torch.no_grad()
def test_image_batch_equals_one_by_one(tiny_model):
    x = torch.randn(4, 3, 64, 64)
    batch = tiny_model.get_image_features(x)
    single = torch.cat([tiny_model.get_image_features(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)


def test_normalized_rois_for_slots_and_lists():
    from fgclip_model.regions import normalized_rois

    slots = torch.tensor([[[0.0, 0.0, 1.0, 0.5], [0.1, 0.2, 0.3, 0.4]], [[-0.5, 0.5, 1.5, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    grid_wh = torch.tensor([[4, 2], [8, 6]])
    rois = normalized_rois(slots, grid_wh, clip=True)
    expected = torch.tensor([[0, 0, 0, 4, 1], [0, 0.4, 0.4, 1.2, 0.8], [1, 0, 3, 8, 6], [1, 0, 0, 0, 0]])
    torch.testing.assert_close(rois, expected)
    as_list = normalized_rois([slots[0], slots[1][:1]], grid_wh, clip=True)
    torch.testing.assert_close(as_list, expected[:3])
    assert normalized_rois(slots, grid_wh)[2, 1].item() == -4.0  # no clipping unless asked
