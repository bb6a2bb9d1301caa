"""The state-dict contract of the released FG-CLIP checkpoints and loud failures on incomplete checkpoints."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fgclip_model import FGCLIPConfig, FGCLIPModel

BASE = {
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    },
    "projection_dim": 512,
}
LARGE = {
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
    },
    "projection_dim": 768,
}


def _meta_state_dict(geometry: dict) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = FGCLIPModel(FGCLIPConfig(**geometry))
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("geometry", "count", "positions"), [(BASE, 403, 197), (LARGE, 595, 577)])
def test_released_key_set(geometry, count, positions):
    shapes = _meta_state_dict(geometry)
    assert len(shapes) == count
    dt, dv, p = (
        geometry["text_config"]["hidden_size"],
        geometry["vision_config"]["hidden_size"],
        geometry["projection_dim"],
    )
    assert shapes["logit_scale"] == shapes["logit_scale_finegraind"] == shapes["logit_scale_hardneg"] == ()
    assert shapes["text_model.embeddings.position_embedding.weight"] == (77, dt)
    assert shapes["text_model.embeddings.position_embedding_res.weight"] == (248, dt)
    assert shapes["text_model.embeddings.position_embedding_ori.weight"] == (248, dt)
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (positions, dv)
    assert shapes["text_filip_projection.weight"] == shapes["text_projection.weight"] == (p, dt)
    assert shapes["visual_projection.weight"] == (p, dv)
    assert not any("position_ids" in k or "mask" in k for k in shapes)


def test_golden_file_has_exactly_our_keys(golden):
    file_keys = set(load_file(golden / "v1_s0" / "model" / "model.safetensors"))
    config = FGCLIPConfig.from_pretrained(golden / "v1_s0" / "model")
    assert set(FGCLIPModel(config).state_dict()) == file_keys


def _copy_with_state(golden, tmp_path, edit) -> str:
    folder = tmp_path / "ckpt"
    shutil.copytree(golden / "v1_s0" / "model", folder)
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_missing_key_fails_loudly(golden, tmp_path):
    folder = _copy_with_state(golden, tmp_path, lambda s: s.pop("text_filip_projection.weight"))
    with pytest.raises(ValueError, match=r"missing.*text_filip_projection"):
        FGCLIPModel.from_pretrained(folder)
    model = FGCLIPModel.from_pretrained(folder, strict=False)  # explicit opt-in initialises it
    assert model.text_filip_projection.weight.abs().sum() > 0


def test_misshaped_key_fails_loudly(golden, tmp_path):
    def edit(state):
        state["text_model.embeddings.position_embedding_res.weight"] = torch.zeros(77, 64)

    folder = _copy_with_state(golden, tmp_path, edit)
    with pytest.raises(ValueError, match="shapes do not fit"):
        FGCLIPModel.from_pretrained(folder)


def test_stray_position_ids_are_ignored(golden, tmp_path):
    def edit(state):  # Hub-style garbage buffers
        state["text_model.embeddings.position_ids"] = torch.full((1, 77), 12345, dtype=torch.long)
        state["vision_model.embeddings.position_ids"] = torch.full((1, 17), -7, dtype=torch.long)

    folder = _copy_with_state(golden, tmp_path, edit)
    reference = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()
    model = FGCLIPModel.from_pretrained(folder).eval()
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(ids), reference.get_text_features(ids), atol=1e-6, rtol=0)


def test_config_forces_clip_special_ids(golden):
    raw = json.loads((golden / "v1_s0" / "model" / "config.json").read_text())
    assert "eos_token_id" not in raw["text_config"]  # the released files rely on the default
    config = FGCLIPConfig.from_pretrained(golden / "v1_s0" / "model")
    assert (config.text_config.bos_token_id, config.text_config.eos_token_id) == (49406, 49407)
    assert config.text_config.pad_token_id == 49407
    assert config.long_max_position_embeddings == 248 and config.long_keep_positions == 20


def test_safetensors_headers_are_checked_before_loading(golden, tmp_path):
    import fgclip_model
    from fgclip_model.loading import check_safetensors

    folder = tmp_path / "model"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    check_safetensors(weights)  # the intact file passes
    cases = {
        data[:5]: "truncated safetensors file (5 bytes)",
        data[:-1]: "truncated safetensors file (its header describes",
        (2**40).to_bytes(8, "little") + data[8:]: "over the format's limit",
        (16).to_bytes(8, "little") + b"\xff" * 16 + data[24:]: "header is not valid JSON",
        (4).to_bytes(8, "little") + b"[1,]": "header is not valid JSON",
        (2).to_bytes(8, "little") + b"[]": "header is not a mapping",
    }
    for content, message in cases.items():
        weights.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(message)):
            fgclip_model.load(folder)
        with pytest.raises(ValueError, match=re.escape(message)):
            fgclip_model.FGCLIP2Model.from_pretrained(folder)


def test_pickled_weight_files_are_refused_not_run(golden, tmp_path, plant_pickle):
    import fgclip_model

    folder = tmp_path / "model"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", folder)
    (folder / "model.safetensors").unlink()
    plant_pickle(folder / "pytorch_model.bin", tmp_path / "marker", key="logit_scale")
    with pytest.raises(ValueError, match="refused, a weight file holds objects that only code execution"):
        fgclip_model.load(folder)
    assert not (tmp_path / "marker").exists()


def test_fresh_weights_follow_the_configured_initialisation():
    """Composite modules (text tables, attention / MLP blocks, NaFlex embeddings) are initialised, not left at
    torch's defaults (token tables N(0, 1), uniform linears with non-zero biases)."""
    from fgclip_model import FGCLIP2Config, FGCLIP2Model

    torch.manual_seed(0)
    size = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    v1 = FGCLIPModel(FGCLIPConfig(text_config=size, vision_config={**size, "image_size": 64}, projection_dim=32))
    v2 = FGCLIP2Model(
        FGCLIP2Config(text_config={**size, "vocab_size": 4000, "projection_size": 64}, vision_config=size)
    )
    for model in (v1, v2):
        tables = model.text_model.embeddings
        for table in (tables.token_embedding, tables.position_embedding, tables.position_embedding_res):
            assert abs(table.weight.std().item() - 0.02) < 0.003, type(model).__name__
        layer = model.text_model.encoder.layers[0]
        for linear in (layer.self_attn.q_proj, layer.self_attn.out_proj, layer.mlp.fc1, layer.mlp.fc2):
            assert linear.bias.abs().max() == 0
    attention = v1.text_model.encoder.layers[0].self_attn.q_proj.weight  # CLIP: width^-0.5 (2 layers)^-0.5
    assert abs(attention.std().item() - 64**-0.5 * 4**-0.5) < 0.008
    patch = v2.vision_model.embeddings.patch_embedding.weight  # SigLIP: uniform(±fan_in^-0.5)
    assert patch.abs().max() <= 768**-0.5 and patch.abs().max() > 0.9 * 768**-0.5


def test_a_missing_weight_is_initialised_and_the_loaded_ones_kept(golden, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(golden / "v1_s0" / "model", folder)
    state = load_file(folder / "model.safetensors")
    dropped = "text_filip_projection.weight"
    save_file({k: v for k, v in state.items() if k != dropped}, folder / "model.safetensors", metadata={"format": "pt"})
    model = FGCLIPModel.from_pretrained(folder, strict=False)
    loaded = model.state_dict()
    for key, value in state.items():
        if key != dropped and not key.endswith("position_ids"):
            assert torch.equal(loaded[key], value), key  # initialising the composites touched no loaded tensor
    std = model.config.text_config.hidden_size**-0.5
    assert abs(loaded[dropped].std().item() - std) < 0.4 * std  # the missing one got CLIP's projection init


def test_standard_forward_keywords_keep_the_inference_path(golden):
    """transformers' callers pass return_dict= / position_ids=None / output_* flags; they used to be taken for a
    stage-2 batch and fail in the loss. forward is inference only: a stage-2 batch's keywords are refused."""
    from safetensors.torch import load_file as load

    from fgclip_model import FGCLIP2Model

    io = load(golden / "v1_s0" / "io.safetensors")
    v1 = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()
    with torch.no_grad():
        out = v1(input_ids=io["input_ids_short"], pixel_values=io["pixel_values"], return_dict=True, position_ids=None)
    assert out.logits_per_image.shape == (3, 3)
    v2 = FGCLIP2Model.from_pretrained(golden / "v2_s0_dynamic" / "model").eval()
    io2 = load(golden / "v2_s0_dynamic" / "io.safetensors")
    inputs = {k: io2[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
    with torch.no_grad():
        out = v2(input_ids=io2["input_ids_short"], **inputs, return_dict=True, output_attentions=False)
    torch.testing.assert_close(out.logits_per_image, io2["logits_per_image"], atol=2e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        v2(input_ids=io2["input_ids_short"], **inputs, colour="red")
    for model, pixels in ((v1, {"pixel_values": io["pixel_values"]}), (v2, inputs)):
        with pytest.raises(TypeError, match="unexpected keyword argument 'text_short'"):
            model(**pixels, text_short=io["input_ids_short"])
    with torch.no_grad():
        full = v2(input_ids=io2["input_ids_short"], **inputs, output_hidden_states=True)
        flat = v2(input_ids=io2["input_ids_short"], **inputs, return_dict=False)
    layers = v2.config.vision_config.num_hidden_layers
    assert len(full.vision_model_output.hidden_states) == layers + 1  # embeddings + every layer
    torch.testing.assert_close(full.logits_per_image, io2["logits_per_image"], atol=2e-5, rtol=1e-4)
    assert isinstance(flat, tuple) and torch.equal(flat[0], out.logits_per_image)


def test_tiny_tower_factory_builds_both_families():
    from fgclip_model import FGCLIP2Model
    from fgclip_model.tiny import fgclip2_config, fgclip_config, tower

    assert tower(48, 2, 4, mlp=4) == {
        "hidden_size": 48,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    with pytest.raises(ValueError, match="not divisible"):
        tower(30, 1, 4)
    v1 = FGCLIPModel(fgclip_config(short_length=24, long_length=96, keep=8))
    assert v1.text_model.embeddings.position_embedding_res.weight.shape == (96, 32)
    v2 = FGCLIP2Model(fgclip2_config(vocab_size=100, short_length=24, long_length=96, keep=8))
    assert v2.text_model.embeddings.token_embedding.weight.shape == (100, 32)


def test_forward_without_inputs_and_a_broken_config_are_clear_errors(golden, tmp_path):
    import fgclip_model

    v1 = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model")
    with pytest.raises(ValueError, match=r"training losses: compute_loss\(batch\)"):
        v1(pixel_values=torch.zeros(1, 3, 64, 64), return_dict=True)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "fgclip2", ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        fgclip_model.load(folder)
