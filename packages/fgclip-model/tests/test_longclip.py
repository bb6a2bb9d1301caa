"""Long-CLIP: the knowledge-preserving stretch, the .pt converter (golden longclip_s0) and its inverse."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from fgclip_model.longclip import (
    clip_to_longclip,
    export_longclip_state_dict,
    load_longclip_checkpoint,
    stretch_positions,
    stretched_length,
)


def _index_form(p: torch.Tensor) -> torch.Tensor:
    """The reference's loops, written out, in float64."""
    q = torch.zeros(248, p.shape[1], dtype=torch.float64)
    q[:20] = p[:20]
    for i in range(56):
        for r in range(4):
            q[20 + 4 * i + r] = (1 - r / 4) * p[20 + i] + (r / 4) * p[21 + i]
    for r in range(4):
        q[244 + r] = p[76] + (r / 4) * (p[76] - p[75])
    return q


def test_stretch_matches_index_form_and_anchors():
    p = torch.randn(77, 16, dtype=torch.float64)
    q = stretch_positions(p)
    assert q.shape == (248, 16) and stretched_length() == 248
    torch.testing.assert_close(q, _index_form(p), atol=1e-12, rtol=0)
    # kept rows and interpolation anchors are exact copies
    assert torch.equal(q[:20], p[:20])
    assert torch.equal(q[20 + 4 * torch.arange(57)], p[20 + torch.arange(57)])
    torch.testing.assert_close(q[22], (p[20] + p[21]) / 2)
    torch.testing.assert_close(q[247], p[76] + 0.75 * (p[76] - p[75]))


def test_stretch_closed_form_in_float32():
    p = torch.randn(77, 8)
    q = stretch_positions(p)
    pos = 20 + (torch.arange(20, 248) - 20) / 4  # fractional source position
    lower = pos.floor().long().clamp(max=75)
    alpha = (pos - lower)[:, None]
    closed = (1 - alpha) * p[lower] + alpha * p[lower + 1]
    torch.testing.assert_close(q[20:], closed, atol=1e-6, rtol=1e-6)
    assert q.dtype == torch.float32


def test_stretch_other_geometries_and_errors():
    p = torch.randn(10, 2)
    assert stretch_positions(p, new_length=4 + 3 * 6, keep=4).shape == (22, 2)
    with pytest.raises(ValueError, match="shorter"):
        stretch_positions(p, new_length=8, keep=4)
    with pytest.raises(ValueError, match="keep"):
        stretch_positions(p, keep=0)


def test_stretch_to_a_length_with_a_fractional_ratio():
    """77 -> 512 (Long-CLIP users ask for longer text): the kept rows copied, the rest the interpolant at
    20 + (j − 20)·57/492, rising monotonically through the old rows and ending just past row 76."""
    p = torch.randn(77, 8, dtype=torch.float64)
    q = stretch_positions(p, new_length=512)
    assert q.shape == (512, 8) and torch.equal(q[:20], p[:20])
    position = 20 + (torch.arange(20, 512, dtype=torch.float64) - 20) * 57 / 492
    lower = position.floor().long().clamp(max=75)
    alpha = (position - lower)[:, None]
    torch.testing.assert_close(q[20:], (1 - alpha) * p[lower] + alpha * p[lower + 1], atol=1e-12, rtol=0)
    assert 76 < position[-1] < 77
    ramp = torch.arange(77, dtype=torch.float64)[:, None]  # a linear table stays linear (no kinks at the anchors)
    stretched = stretch_positions(ramp, new_length=512)[20:, 0]
    torch.testing.assert_close(stretched.diff(), torch.full((491,), 57 / 492, dtype=torch.float64))


@pytest.fixture(scope="module")
def golden_longclip(golden):
    return load_longclip_checkpoint(golden / "longclip_s0" / "longclip-tiny.pt")


@torch.no_grad()
def test_golden_longclip_outputs(golden, golden_longclip):
    io = load_file(golden / "longclip_s0" / "io.safetensors")
    assert golden_longclip.config.text_config.max_position_embeddings == 248
    torch.testing.assert_close(
        golden_longclip.get_image_features(io["pixel_values"]).pooler_output, io["image_embeds"], atol=2e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        golden_longclip.get_text_features(io["input_ids"]).pooler_output, io["text_embeds"], atol=2e-5, rtol=1e-4
    )
    # any length up to 248 (the reference needs exactly 248): the 5-token row unpadded
    short = io["input_ids"][0][:5][None]
    torch.testing.assert_close(
        golden_longclip.get_text_features(short).pooler_output[0], io["text_embeds"][0], atol=2e-5, rtol=1e-4
    )


def test_effective_table_and_export_round_trip(golden, golden_longclip, tmp_path):
    original = torch.load(golden / "longclip_s0" / "longclip-tiny.pt", weights_only=True)
    table = golden_longclip.text_model.embeddings.position_embedding.weight
    assert torch.equal(table[:20], original["positional_embedding"][:20])
    assert torch.equal(table[20:], original["positional_embedding_res"][20:])
    exported = export_longclip_state_dict(golden_longclip)
    assert set(exported) == set(original)
    for key, value in original.items():
        assert exported[key].shape == value.shape, key
        if key not in ("positional_embedding", "positional_embedding_res"):
            assert torch.equal(exported[key], value), key
    torch.save(exported, tmp_path / "again.pt")
    again = load_longclip_checkpoint(tmp_path / "again.pt")
    for (k, v), (k2, v2) in zip(golden_longclip.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"token_embedding.weight": Payload()}, f)
    with pytest.raises(ValueError, match=r"refused: .*only code execution"):
        load_longclip_checkpoint(path)


def test_not_a_clip_state_dict_is_a_clear_error(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an OpenAI / Long-CLIP ViT state dict"):
        load_longclip_checkpoint(tmp_path / "other.pt")


@torch.no_grad()
def test_clip_to_longclip_keeps_short_text_behaviour():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    clip = CLIPModel(config).eval()
    long = clip_to_longclip(clip)
    assert long.config.text_config.max_position_embeddings == 248
    assert clip.config.text_config.max_position_embeddings == 77  # the input model is untouched
    ids = torch.tensor([[49406, 400, 500, 600, 49407]])  # within the 20 kept positions: identical features
    torch.testing.assert_close(
        long.get_text_features(ids).pooler_output, clip.get_text_features(ids).pooler_output, atol=1e-6, rtol=0
    )
    long_ids = torch.randint(300, 40000, (1, 200))
    long_ids[0, 0], long_ids[0, -1] = 49406, 49407
    assert torch.isfinite(long.get_text_features(long_ids).pooler_output).all()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(long.get_image_features(x).pooler_output, clip.get_image_features(x).pooler_output)
