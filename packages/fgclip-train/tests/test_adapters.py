"""Tower freezing and LoRA: what trains, that LoRA starts as the identity, and that the merged weights load into
a plain model of the released layout and compute what the adapted model computes."""

from __future__ import annotations

import pytest
import torch

from fgclip_model import FGCLIP2Model, FGCLIPModel
from fgclip_model.tiny import fgclip2_config, fgclip_config
from fgclip_train.adapters import (
    add_lora,
    count_trainable,
    freeze_towers,
    lora_scalings,
    lora_targets,
    merged_state_dict,
)

FAMILIES = {
    "fgclip": lambda: FGCLIPModel(fgclip_config(layers=3, vocab_size=1000)),
    "fgclip2": lambda: FGCLIP2Model(fgclip2_config(layers=3)),
}


def _features(model, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, 900, (2, 12))
    if family == "fgclip":
        image = model.get_image_features(torch.randn(2, 3, 64, 64))
    else:
        pixels = torch.randn(2, 16, 3 * 16 * 16)
        image = model.get_image_features(
            pixels, torch.ones(2, 16, dtype=torch.long), spatial_shapes=torch.tensor([[4, 4], [4, 4]])
        )
    return image, model.get_text_features(ids, walk_type="short")


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_vision_keeps_the_last_blocks_unlocked(family):
    model = FAMILIES[family]()
    freeze_towers(model, ("vision_model",), unlocked_layers=1)
    trainable = _trainable(model)
    vision = {n for n, _ in model.named_parameters() if n.startswith("vision_model.")}
    assert all(
        n.startswith("vision_model.encoder.layers.2.") or "post_layernorm" in n or ".head." in n
        for n in vision & trainable
    )
    assert any(n.startswith("vision_model.encoder.layers.2.") for n in trainable)
    assert not any(n.startswith(("vision_model.encoder.layers.0.", "vision_model.embeddings.")) for n in trainable)
    assert {n for n, _ in model.named_parameters() if n.startswith("text_model.")} <= trainable


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_text_entirely(family):
    model = FAMILIES[family]()
    freeze_towers(model, ("text_model",))
    assert not any(n.startswith("text_model.") for n in _trainable(model))
    assert any(n.startswith("vision_model.") for n in _trainable(model))
    with pytest.raises(ValueError, match="has 3 layers"):
        freeze_towers(model, ("text_model",), unlocked_layers=4)
    with pytest.raises(ValueError, match="unknown tower"):
        freeze_towers(model, ("audio_model",))


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_adapters_and_starts_as_the_model(family):
    model = FAMILIES[family]().eval()
    before = _features(model, family)
    targets = add_lora(model, rank=4, alpha=8, train=("logit_scale",))
    # 2 towers x 3 blocks x 6 projections (q, k, v, out, fc1, fc2)
    assert len(targets) == 36 and all(".encoder.layers." in t for t in targets)
    trainable = _trainable(model)
    assert trainable and all(".lora_" in n or n.startswith("logit_scale") for n in trainable)
    assert "logit_scale" in trainable
    count = count_trainable(model)
    assert count.trainable == sum(model.get_parameter(n).numel() for n in trainable) and count.share < 0.5
    after = _features(model, family)  # B starts at zero: the adapted model computes the same features
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)
    assert type(model).__name__ == {"fgclip": "FGCLIPModel", "fgclip2": "FGCLIP2Model"}[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_weights_load_into_the_released_layout(family):
    model = FAMILIES[family]().eval()
    add_lora(model, rank=4, alpha=8, modules=("q_proj", "v_proj", "fc2"))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: B away from zero
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.2)
    adapted = _features(model, family)
    scalings = lora_scalings(model)
    assert len(scalings) == 18 and set(scalings.values()) == {2.0}  # alpha / rank
    merged = merged_state_dict(model.state_dict(), scalings)
    plain = FAMILIES[family]().eval()
    assert set(merged) == set(plain.state_dict())  # no adapter or base_layer key left
    plain.load_state_dict(merged, strict=True)
    for a, b in zip(adapted, _features(plain, family), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the merge changed the adapted projections and only them
    state = model.state_dict()
    k, q = (f"vision_model.encoder.layers.0.self_attn.{m}" for m in ("k_proj", "q_proj"))
    assert merged[f"{k}.weight"].equal(state[f"{k}.weight"])
    assert not merged[f"{q}.weight"].equal(state[f"{q}.base_layer.weight"])


def test_lora_targets_refuse_an_unknown_projection():
    with pytest.raises(ValueError, match="no qkv projection"):
        lora_targets(FAMILIES["fgclip2"](), ("vision_model",), ("qkv",))


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(checkpoint / "model" / "model.safetensors")


def test_frozen_and_lora_runs_write_released_checkpoints(tiny_overrides, tmp_path, capfd):
    """A short run, then two fine-tuning runs from its checkpoint: a frozen image tower keeps its weights exactly;
    LoRA trains a small share and its checkpoints hold merged weights under the released keys."""
    import fgclip_model
    from fgclip_train.config import load_config
    from fgclip_train.loop import train

    base = [*tiny_overrides, "--runtime.eval_before=false", "--runtime.eval_after=false", "--optim.lr=3e-3"]
    start = train(load_config(overrides=[*base, "--schedule.max_steps=3"]))["checkpoint"]
    start_weights = _weights(tmp_path / "run" / "checkpoint-0000003")

    def finetune(name: str, *extra: str) -> dict[str, torch.Tensor]:
        out = tmp_path / name
        train(
            load_config(
                overrides=[
                    *base,
                    f"--runtime.output_dir={out}",
                    f"--model.init={start}/model",
                    "--schedule.max_steps=3",
                    *extra,
                ]
            )
        )
        fgclip_model.load(out / "checkpoint-0000003" / "model")  # loads like any checkpoint (strict keys)
        return _weights(out / "checkpoint-0000003")

    frozen = finetune("frozen", "--model.freeze.vision=true")
    assert "trainable parameters:" in capfd.readouterr().out
    assert set(frozen) == set(start_weights)
    assert all(frozen[k].equal(v) for k, v in start_weights.items() if k.startswith("vision_model."))
    assert not all(frozen[k].equal(v) for k, v in start_weights.items() if k.startswith("text_model.encoder."))

    lora = finetune("lora", "--model.lora={rank: 2, alpha: 4}")
    printed = capfd.readouterr().out
    assert "trainable parameters:" in printed
    assert set(lora) == set(start_weights)  # merged: the released layout, no adapter keys
    q = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert not lora[q].equal(start_weights[q])  # the adapter moved the projection
    assert lora["vision_model.embeddings.patch_embedding.weight"].equal(
        start_weights["vision_model.embeddings.patch_embedding.weight"]
    )  # outside the adapters and heads: untouched
