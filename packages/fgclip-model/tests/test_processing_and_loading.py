"""The v1 processor (square squash, CLIP normalisation, walk-aware tokenisation) and family-aware loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, CLIPConfig, CLIPModel

import fgclip_model
from fgclip_model import FGCLIPModel
from fgclip_model.fgclip.processing import FGCLIPProcessor

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture
def checkpoint(golden, tmp_path, clip_tokenizer):
    folder = tmp_path / "fgclip-tiny"
    shutil.copytree(golden / "v1_s0" / "model", folder)
    clip_tokenizer.save_pretrained(folder)
    return folder


def _image(h=90, w=150, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_load_returns_model_and_processor(checkpoint):
    model, processor = fgclip_model.load(checkpoint)
    assert isinstance(model, FGCLIPModel) and not model.training
    assert processor.image_size == 64 and processor.tokenizer is not None
    assert fgclip_model.detect_family(checkpoint) == "fgclip"


def test_images_are_squashed_not_cropped(checkpoint):
    _, processor = fgclip_model.load(checkpoint)
    image = _image()
    pixels = processor(images=[image, image.convert("L")])["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64)
    by_hand = np.asarray(image.resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    by_hand = torch.from_numpy(((by_hand - MEAN) / STD).transpose(2, 0, 1)).float()
    torch.testing.assert_close(pixels[0], by_hand, atol=1e-5, rtol=1e-5)


def test_text_lengths_per_walk(checkpoint):
    _, processor = fgclip_model.load(checkpoint)
    words = " ".join(["cat"] * 400)
    short = processor(text=[words, "A DOG"], walk_type="short")
    long = processor(text=[words], walk_type="long")
    assert short["input_ids"].shape == (2, 77) and long["input_ids"].shape == (1, 248)
    assert short["input_ids"][0, -1] == 49407 and long["input_ids"][0, -1] == 49407  # truncation keeps EOS
    assert short["attention_mask"][1].sum() == 4  # bos, "a", "dog", eos
    assert torch.equal(short["input_ids"][1, :4], processor(text="a dog")["input_ids"][0])
    with pytest.raises(ValueError, match="walk_type"):
        processor(text="x", walk_type="medium")


def test_end_to_end_similarity(checkpoint):
    model, processor = fgclip_model.load(checkpoint)
    inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=_image())
    with torch.no_grad():
        out = model(
            input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"]
        )
    assert out.logits_per_image.shape == (1, 2) and out.logits_per_text.shape == (2, 1)
    torch.testing.assert_close(out.logits_per_image.softmax(-1).sum(), torch.tensor(1.0))


def test_processor_round_trip(checkpoint, tmp_path):
    _, processor = fgclip_model.load(checkpoint)
    processor.save_pretrained(tmp_path / "saved")
    again = FGCLIPProcessor.from_pretrained(tmp_path / "saved")
    text = ["two red squares left of a blue circle"]
    assert torch.equal(again(text=text)["input_ids"], processor(text=text)["input_ids"])


def test_plain_clip_still_loads_as_clip(tmp_path):
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
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
    CLIPModel(config).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is CLIPModel
    assert fgclip_model.detect_family(tmp_path) == "clip"


def test_unknown_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        fgclip_model.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="not a known family"):
        fgclip_model.load(tmp_path)


def test_hub_ids_resolve_through_the_local_cache_offline(golden, tmp_path, monkeypatch, gemma_like_tokenizer):
    """`load("org/name")` finds a snapshot in the Hugging Face cache as transformers would; offline and absent is
    one clear error naming the cache (nothing is downloaded here)."""
    import shutil

    import pytest

    import fgclip_model

    snapshot = tmp_path / "hub" / "models--qihoo360--fg-clip2-base" / "snapshots" / "0123abcd"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", snapshot)
    gemma_like_tokenizer.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert fgclip_model.resolve("qihoo360/fg-clip2-base") == snapshot
    model, processor = fgclip_model.load("qihoo360/fg-clip2-base")
    assert type(model).__name__ == "FGCLIP2Model" and processor.tokenizer is not None
    with pytest.raises(FileNotFoundError, match=r"neither a local path nor in the Hugging Face cache .*hub"):
        fgclip_model.load("qihoo360/fg-clip2-so400m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fgclip_model.load(tmp_path / "no-such-folder")
