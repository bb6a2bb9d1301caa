"""Text features do not depend on how the caller padded: whenever an attention mask says which tokens are real,
every family gives the features of its processor's own layout (real tokens first, padded on the right).

FG-CLIP 2 pools the last position, FG-CLIP v1 the first EOS under a causal mask: with left padding both would read
other positions (and v1's CLIP tokenizer pads with its EOS id), so the models re-pack masked text first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, pipeline

import fgclip_model
from fgclip_model import FGCLIP2ImageProcessor
from fgclip_model.fgclip.modeling import FGCLIPModel
from fgclip_model.fgclip2 import FGCLIP2Model
from fgclip_model.layers import pack_left

TEXTS = ["a red square", "two small green triangles left of a blue circle", "photo", "the big blue circle above"]
SIDES = ("left", "right")
# (padding, max_length) as a caller may tokenise: to the longest text, to the walk's length, shorter, longer
PADDINGS = {"longest": (True, None), "max_length_64": ("max_length", 64), "max_length_20": ("max_length", 20)}
LONG_PADDINGS = {**PADDINGS, "max_length_196": ("max_length", 196), "max_length_230": ("max_length", 230)}


def _save_left_padding(tokenizer, folder: Path) -> None:
    """Save ``tokenizer`` with ``padding_side: left`` in its config (as a Gemma checkpoint that does not set it)."""
    tokenizer.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["padding_side"] = "left"
    config_file.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def fgclip2(golden) -> FGCLIP2Model:
    return FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model").eval()


def _tokens(tokenizer, side: str, padding, max_length, texts=TEXTS):
    kwargs = {"max_length": max_length} if max_length else {}
    return tokenizer(texts, padding=padding, padding_side=side, return_tensors="pt", **kwargs)


def test_pack_left_moves_real_tokens_first():
    ids = torch.tensor([[0, 0, 5, 6, 1], [5, 6, 7, 1, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    packed, keep = pack_left(ids, mask, length=6, pad_id=9)
    assert packed.tolist() == [[5, 6, 1, 9, 9, 9], [5, 6, 7, 1, 9, 9]]
    assert keep.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]] and keep.dtype == mask.dtype
    packed, keep = pack_left(ids, mask, length=4, pad_id=9)  # wider than the length but every row fits: cut
    assert packed.tolist() == [[5, 6, 1, 9], [5, 6, 7, 1]]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("padding", PADDINGS)
@torch.no_grad()
def test_fgclip2_short_and_box_any_padding(fgclip2, gemma_like_tokenizer, side, padding):
    canonical = _tokens(gemma_like_tokenizer, "right", "max_length", 64)  # the processor's layout
    got = _tokens(gemma_like_tokenizer, side, *PADDINGS[padding])
    for walk in ("short", "box"):
        expected = fgclip2.get_text_features(**canonical, walk_type=walk)
        torch.testing.assert_close(fgclip2.get_text_features(**got, walk_type=walk), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("padding", LONG_PADDINGS)
@torch.no_grad()
def test_fgclip2_long_any_padding(fgclip2, gemma_like_tokenizer, side, padding):
    canonical = _tokens(gemma_like_tokenizer, "right", "max_length", 196)
    got = _tokens(gemma_like_tokenizer, side, *LONG_PADDINGS[padding])
    expected = fgclip2.get_text_features(**canonical, walk_type="long")
    torch.testing.assert_close(fgclip2.get_text_features(**got, walk_type="long"), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_fgclip2_left_padding_would_change_the_features(fgclip2, gemma_like_tokenizer):
    """Why the re-pack is needed: the tower itself, fed left-padded text, pools another state."""
    left = _tokens(gemma_like_tokenizer, "left", "max_length", 64)
    right = _tokens(gemma_like_tokenizer, "right", "max_length", 64)
    raw_left = fgclip2.text_model(left["input_ids"], left["attention_mask"])
    raw_right = fgclip2.text_model(right["input_ids"], right["attention_mask"])
    assert (raw_left - raw_right).abs().max() > 1e-3


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("padding", PADDINGS)
@torch.no_grad()
def test_fgclip2_trained_on_left_padding_reads_its_own_layout(fgclip2, side, padding):
    """A tower trained on left-padded text (a word-level FG-Shapes tokenizer: the end-of-text token at the pooled
    last position; ``text_config.padding_side: left``) gets that layout's features whatever the caller's padding."""
    from fgclip_data.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(TEXTS, "fgclip2")
    assert tokenizer.padding_side == "left"
    left = FGCLIP2Model(
        fgclip2.config.__class__(
            **{
                **fgclip2.config.to_dict(),
                "text_config": {**fgclip2.config.text_config.to_dict(), "padding_side": "left", "vocab_size": 1000},
            }
        )
    ).eval()
    canonical = _tokens(tokenizer, "left", "max_length", 64)  # as the collator gives it in training: EOS last
    expected = left.get_text_features(**canonical)
    got = _tokens(tokenizer, side, *PADDINGS[padding])
    torch.testing.assert_close(left.get_text_features(**got), expected, atol=1e-5, rtol=1e-5)
    right = FGCLIP2Model(
        left.config.__class__(
            **{**left.config.to_dict(), "text_config": {**left.config.text_config.to_dict(), "padding_side": "right"}}
        )
    )
    right.load_state_dict(left.state_dict())
    assert not torch.allclose(right.get_text_features(**got), expected, atol=1e-3)  # the side matters


@torch.no_grad()
def test_fgclip2_golden_numbers_unchanged(golden, fgclip2):
    io = load_file(golden / "v2_s1_fixed" / "io.safetensors")
    ids = io["input_ids_short"]
    torch.testing.assert_close(fgclip2.get_text_features(ids), io["text_embeds_short"], atol=2e-5, rtol=1e-4)
    # the same ids left-padded with their (all-ones) mask: real tokens only, so the mask-free golden numbers hold
    # wherever the golden text fills all 64 positions, and masked re-packing is the identity on right padding
    mask = torch.ones_like(ids)
    torch.testing.assert_close(fgclip2.get_text_features(ids, mask), fgclip2.get_text_features(ids))


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("padding", PADDINGS)
@torch.no_grad()
def test_fgclip_v1_any_padding(golden, clip_tokenizer, side, padding):
    model = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()
    texts = ["a cat", "a dog and a cat on the left", "dog"]
    canonical = _tokens(clip_tokenizer, "right", True, None, texts)
    got = _tokens(clip_tokenizer, side, *PADDINGS[padding], texts)
    for walk in ("short", "long"):
        expected = model.get_text_features(**canonical, walk_type=walk)
        torch.testing.assert_close(model.get_text_features(**got, walk_type=walk), expected, atol=1e-5, rtol=1e-5)
    # one text alone (no padding at all) gives the same features
    alone = clip_tokenizer(texts[:1], return_tensors="pt")
    torch.testing.assert_close(
        model.get_text_features(**alone), model.get_text_features(**got)[:1], atol=1e-5, rtol=1e-5
    )


def test_processors_pad_right_whatever_the_tokenizer_says(golden, gemma_like_tokenizer, clip_tokenizer, tmp_path):
    left_gemma = type(gemma_like_tokenizer)(
        tokenizer_object=gemma_like_tokenizer.backend_tokenizer, padding_side="left"
    )
    left_gemma.pad_token = "<pad>"
    processor = fgclip_model.FGCLIP2Processor(FGCLIP2ImageProcessor(), left_gemma)
    out = processor(text=TEXTS)
    assert out["input_ids"].shape[1] == 64 and bool(out["attention_mask"][:, 0].all())
    assert left_gemma(TEXTS, padding=True, return_tensors="pt")["attention_mask"][:, 0].tolist() != [1, 1, 1, 1]


def test_longclip_processor_pads_right_with_a_left_padding_tokenizer(golden, clip_tokenizer, tmp_path):
    """Long-CLIP loads as transformers' CLIPModel (pooled at the first EOS; the CLIP tokenizer pads with EOS), whose
    forward is not fgclip's: left-padded text changes its features, so fgclip's processor always pads right."""
    folder = tmp_path / "longclip"
    model, _ = fgclip_model.load(golden / "longclip_s0" / "longclip-tiny.pt")
    model.save_pretrained(folder)
    _save_left_padding(clip_tokenizer, folder)
    model, processor = fgclip_model.load(folder)
    assert isinstance(model, CLIPModel) and processor.tokenizer.padding_side == "left"
    texts = ["a cat", "a dog and a cat on the left"]
    inputs = processor(text=texts)
    assert bool(inputs["attention_mask"][:, 0].all())  # right padding
    with torch.no_grad():
        batch = model.get_text_features(**inputs).pooler_output
        alone = model.get_text_features(**processor(text=texts[:1])).pooler_output
        left = processor.tokenizer(texts, padding=True, return_tensors="pt")
        left_features = model.get_text_features(**left).pooler_output
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)
    assert (left_features[0] - batch[0]).abs().max() > 1e-4  # what a raw left-padded batch would give


@pytest.fixture
def left_padding_fgclip2_folder(golden, gemma_like_tokenizer, tmp_path):
    folder = tmp_path / "fgclip2"
    shutil.copytree(golden / "v2_s1_fixed" / "model", folder)
    _save_left_padding(gemma_like_tokenizer, folder)
    FGCLIP2ImageProcessor().save_pretrained(folder)
    return folder


def test_zero_shot_pipeline_with_a_left_padding_tokenizer(left_padding_fgclip2_folder):
    # labels of different token lengths, so the pipeline's padding=True pads (on the left) the shorter ones
    labels = ["red square", "two small blue circles", "photo", "green triangle above the big red square", "a cat"]
    classifier = pipeline("zero-shot-image-classification", model=str(left_padding_fgclip2_folder))
    assert classifier.tokenizer.padding_side == "left"
    g = torch.Generator().manual_seed(3)
    image = Image.fromarray((torch.rand(96, 96, 3, generator=g) * 255).to(torch.uint8).numpy())
    result = classifier(image, candidate_labels=labels)
    lengths = classifier.tokenizer([f"This is a photo of {x}." for x in labels], padding=True)["attention_mask"]
    assert len({sum(row) for row in lengths}) > 1 and lengths[0][0] == 0  # padded, on the left

    model, processor = fgclip_model.load(left_padding_fgclip2_folder)
    prompts = [f"This is a photo of {label}." for label in labels]
    with torch.no_grad():
        text = processor(text=prompts, walk_type="short")
        assert text["input_ids"].shape[1] == 64 and bool(text["attention_mask"][:, 0].all())
        t = F.normalize(model.get_text_features(**text, walk_type="short"), dim=-1)
        i = F.normalize(
            model.get_image_features(**FGCLIP2ImageProcessor()(images=[image], return_tensors="pt")), dim=-1
        )
        logits = model.logit_scale.exp() * i @ t.T + model.logit_bias
    order = logits[0].argsort(descending=True, stable=True).tolist()
    assert [r["label"] for r in result] == [labels[k] for k in order]
    expected = logits[0].softmax(-1)
    for r in result:
        assert r["score"] == pytest.approx(float(expected[labels.index(r["label"])]), abs=1e-5)
