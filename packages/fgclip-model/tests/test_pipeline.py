"""transformers' own zero-shot image classification pipeline runs both families (no remote code) and ranks the
labels exactly as the model's own features do."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, pipeline

import fgclip_model
from fgclip_model import FGCLIP2ImageProcessor

LABELS = ["red square", "blue circle", "green triangle", "two dogs", "a cat", "small photo"]


@pytest.fixture
def fgclip2_folder(golden, gemma_like_tokenizer, tmp_path):
    folder = tmp_path / "fgclip2"
    shutil.copytree(golden / "v2_s1_fixed" / "model", folder)
    gemma_like_tokenizer.save_pretrained(folder)
    FGCLIP2ImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture
def fgclip_folder(golden, clip_tokenizer, tmp_path):
    folder = tmp_path / "fgclip"
    shutil.copytree(golden / "v1_s0" / "model", folder)
    clip_tokenizer.save_pretrained(folder)
    model, _ = fgclip_model.load(folder)
    size = model.config.vision_config.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size).save_pretrained(folder)
    return folder


def _image(size: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _ranking(result: list[dict]) -> list[str]:
    return [r["label"] for r in result]


@pytest.fixture
def no_pipeline_errors(caplog):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()  # transformers' loggers do not propagate to the root logger by default
    caplog.set_level(logging.ERROR, logger="transformers")
    yield
    hf_logging.disable_propagation()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # e.g. "The model 'FGCLIP2Model' is not supported for zero-shot-image-classification"


def test_fgclip2_through_the_pipeline(fgclip2_folder, no_pipeline_errors):
    classifier = pipeline("zero-shot-image-classification", model=str(fgclip2_folder))
    assert type(classifier.model).__name__ == "FGCLIP2Model"
    image = _image(96)
    result = classifier(image, candidate_labels=LABELS)

    # the model's own features: the processor pads every text to the walk's 64 positions
    model, processor = fgclip_model.load(fgclip2_folder)
    prompts = [f"This is a photo of {label}." for label in LABELS]
    with torch.no_grad():
        text = processor(text=prompts, walk_type="short", return_tensors="pt")
        assert text["input_ids"].shape[1] == 64
        inputs = FGCLIP2ImageProcessor()(images=[image], return_tensors="pt")
        t = F.normalize(model.get_text_features(**text, walk_type="short"), dim=-1)
        i = F.normalize(model.get_image_features(**inputs), dim=-1)
        logits = model.logit_scale.exp() * i @ t.T + model.logit_bias
    order = torch.sigmoid(logits[0]).argsort(descending=True, stable=True).tolist()
    assert _ranking(result) == [LABELS[k] for k in order]
    # the pipeline's scores are a softmax over the same logits (transformers keeps sigmoid for SigLIP types)
    expected = logits[0].softmax(-1)
    for r in result:
        assert r["score"] == pytest.approx(float(expected[LABELS.index(r["label"])]), abs=1e-5)


def test_fgclip2_text_shorter_than_its_walk_is_padded_to_it(fgclip2_folder):
    """The pipeline tokenises with padding=True (to the longest label); FG-CLIP 2 pools the last position, so
    such ids are padded to the walk's length first: the same features as the processor's 64-token padding."""
    model, processor = fgclip_model.load(fgclip2_folder)
    tokenizer = processor.tokenizer
    texts = ["a red square", "two small green triangles left of a blue circle"]
    short = tokenizer(texts, padding=True, return_tensors="pt")
    full = tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")
    assert short["input_ids"].shape[1] < 64
    with torch.no_grad():
        for walk in ("short", "box"):
            torch.testing.assert_close(
                model.get_text_features(**short, walk_type=walk), model.get_text_features(**full, walk_type=walk)
            )
        no_mask = model.get_text_features(short["input_ids"], walk_type="long")
        padded = torch.nn.functional.pad(short["input_ids"], (0, 196 - short["input_ids"].shape[1]))
        torch.testing.assert_close(no_mask, model.get_text_features(padded, walk_type="long"))


def test_fgclip_v1_through_the_pipeline(fgclip_folder, no_pipeline_errors):
    classifier = pipeline("zero-shot-image-classification", model=str(fgclip_folder))
    assert type(classifier.model).__name__ == "FGCLIPModel"
    model, processor = fgclip_model.load(fgclip_folder)
    size = model.config.vision_config.image_size
    image = _image(size, seed=1)  # square at the model's size: the pipeline's crop and FG-CLIP's squash agree
    result = classifier(image, candidate_labels=LABELS, hypothesis_template="a photo of {}")
    with torch.no_grad():
        inputs = processor(images=[image], text=[f"a photo of {label}" for label in LABELS], return_tensors="pt")
        out = model(**inputs)
    probs = out.logits_per_image[0].softmax(-1)
    order = probs.argsort(descending=True, stable=True).tolist()
    assert _ranking(result) == [LABELS[k] for k in order]
    for r in result:
        assert r["score"] == pytest.approx(float(probs[LABELS.index(r["label"])]), abs=1e-5)


def test_plain_clip_still_goes_to_clipmodel(tmp_path, clip_tokenizer):
    from transformers import AutoModelForZeroShotImageClassification, CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path)).__name__ == "CLIPModel"
