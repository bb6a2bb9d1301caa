"""The transformers model contract on both families: attention selection (``attn_implementation``, also after
loading), per-layer hidden states and attention weights, ``return_dict`` on the feature API and forward."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fgclip_model import FGCLIP2Model, FGCLIPModel


def _v2_inputs(golden):
    io = load_file(golden / "v2_s0_dynamic" / "io.safetensors")
    pixels = {k: io[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
    return io, pixels


@pytest.fixture(params=["fgclip", "fgclip2"])
def family(request, golden):
    """(model class, checkpoint folder, image inputs, text ids) of a family's golden model."""
    if request.param == "fgclip":
        io = load_file(golden / "v1_s0" / "io.safetensors")
        return FGCLIPModel, golden / "v1_s0" / "model", {"pixel_values": io["pixel_values"]}, io["input_ids_short"]
    io, pixels = _v2_inputs(golden)
    return FGCLIP2Model, golden / "v2_s0_dynamic" / "model", pixels, io["input_ids_short"]


def test_attention_implementation_reaches_every_tower(family):
    cls, folder, _, _ = family
    default = cls.from_pretrained(folder)
    eager = cls.from_pretrained(folder, attn_implementation="eager")
    for model, expected in ((default, "sdpa"), (eager, "eager")):
        assert model.config._attn_implementation == expected
        for sub in ("text_config", "vision_config"):
            assert getattr(model.config, sub)._attn_implementation == expected, sub
    default.set_attn_implementation("eager")
    assert default.config.vision_config._attn_implementation == "eager"
    with pytest.raises(ValueError):
        default.set_attn_implementation("no-such-kernel")


@torch.no_grad()
def test_eager_and_sdpa_give_the_same_features_and_eager_is_really_used(family, monkeypatch):
    cls, folder, pixels, ids = family
    sdpa, eager = cls.from_pretrained(folder).eval(), cls.from_pretrained(folder, attn_implementation="eager").eval()
    torch.testing.assert_close(
        eager.get_image_features(**pixels), sdpa.get_image_features(**pixels), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(eager.get_text_features(ids), sdpa.get_text_features(ids), atol=1e-5, rtol=1e-4)

    import fgclip_model.layers as layers

    calls = []
    real = layers.OWN_ATTENTION["eager"]
    monkeypatch.setitem(layers.OWN_ATTENTION, "eager", lambda *a, **k: calls.append(1) or real(*a, **k))
    eager.get_text_features(ids)
    depth = eager.config.text_config.num_hidden_layers
    assert len(calls) == depth  # every text layer went through the eager function
    calls.clear()
    sdpa.get_text_features(ids)
    assert not calls


@torch.no_grad()
def test_hidden_states_and_attentions_of_both_towers(family):
    cls, folder, pixels, ids = family
    model = cls.from_pretrained(folder).eval()
    out = model(input_ids=ids, **pixels, output_hidden_states=True, output_attentions=True)
    for tower, config in (
        (out.text_model_output, model.config.text_config),
        (out.vision_model_output, model.config.vision_config),
    ):
        assert len(tower.hidden_states) == config.num_hidden_layers + 1
        assert len(tower.attentions) == config.num_hidden_layers
        batch, length = tower.hidden_states[0].shape[:2]
        assert tower.attentions[0].shape == (batch, config.num_attention_heads, length, length)
        rows = tower.attentions[-1].sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows))  # softmax rows (padding rows included)
    text = out.text_model_output
    # the weights are the layer's: recompute layer 0's attention by hand from its input
    attn = model.text_model.encoder.layers[0].self_attn
    x = model.text_model.encoder.layers[0].layer_norm1(text.hidden_states[0])
    q = attn.q_proj(x).view(*x.shape[:2], attn.num_heads, -1).transpose(1, 2)
    k = attn.k_proj(x).view(*x.shape[:2], attn.num_heads, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * attn.scale
    if cls is FGCLIPModel:  # causal text tower
        scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(text.attentions[0], scores.softmax(-1), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_feature_api_keeps_tensors_by_default_and_honours_return_dict(family):
    cls, folder, pixels, ids = family
    model = cls.from_pretrained(folder).eval()
    image = model.get_image_features(**pixels)
    text = model.get_text_features(ids)
    assert torch.is_tensor(image) and torch.is_tensor(text)
    image_out = model.get_image_features(**pixels, return_dict=True)
    text_out = model.get_text_features(ids, return_dict=True, output_hidden_states=True)
    assert isinstance(image_out, BaseModelOutputWithPooling) and isinstance(text_out, BaseModelOutputWithPooling)
    torch.testing.assert_close(image_out.pooler_output, image, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(text_out.pooler_output, text, atol=1e-6, rtol=1e-5)
    assert image_out.last_hidden_state.shape[0] == image.shape[0]
    assert len(text_out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    flat = model(input_ids=ids, **pixels, return_dict=False)
    assert isinstance(flat, tuple) and torch.equal(flat[0], model(input_ids=ids, **pixels).logits_per_image)
