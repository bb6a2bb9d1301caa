"""Long-CLIP as a Stable Diffusion text encoder: tiny SD 1.x and SDXL pipelines built from configs (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from fgclip_model.cli import main
from fgclip_model.longclip import load_longclip_checkpoint, stretch_positions
from fgclip_model.longclip.bpe import clip_bpe_tokenizer
from fgclip_model.longclip.diffusion import (
    export_diffusers,
    longclip_text_encoder,
    stretch_text_encoder,
    use_longclip,
)

diffusers = pytest.importorskip("diffusers")

GOLDEN = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "golden" / "longclip_s0"
LONGCLIP_PT = GOLDEN / "longclip-tiny.pt"
WIDTH = 64  # the tiny Long-CLIP's text width (SD's first encoder must match it)
WIDTH_2 = 32  # the tiny SDXL second encoder (and its projection)
WORDS = ["red", "green", "blue", "small", "large", "round", "square", "bright", "dark", "soft"]


def _prompt(n_words: int, change_at: int | None = None) -> str:
    words = [WORDS[i % len(WORDS)] for i in range(n_words)]
    if change_at is not None:
        words[change_at] = "zebra"
    return " ".join(words)


def _text_encoder(cls, width: int, **extra):
    torch.manual_seed(1 + width)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        eos_token_id=49407,
        bos_token_id=49406,
        pad_token_id=49407,
        **extra,
    )
    return cls(config).eval()


def _unet(cross_attention_dim: int, sdxl: bool):
    torch.manual_seed(0)
    extra = (
        {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": WIDTH_2 + 6 * 8,
            "use_linear_projection": True,
        }
        if sdxl
        else {}
    )
    return diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=4,
        **extra,
    ).eval()


def _vae():
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(8,),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
    ).eval()


@pytest.fixture(scope="module")
def tokenizer_77():
    return clip_bpe_tokenizer(77)


@pytest.fixture(scope="module")
def sd_base(tmp_path_factory, tokenizer_77) -> Path:
    """A tiny Stable Diffusion 1.x pipeline folder (77-token CLIP text encoder)."""
    pipe = diffusers.StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(CLIPTextModel, WIDTH),
        tokenizer=tokenizer_77,
        unet=_unet(WIDTH, sdxl=False),
        scheduler=diffusers.DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = tmp_path_factory.mktemp("sd") / "base"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sdxl_base(tmp_path_factory, tokenizer_77) -> Path:
    """A tiny SDXL pipeline folder: CLIP-L-like first encoder, projected second encoder (bigG's role)."""
    tokenizer_2 = clip_bpe_tokenizer(77)
    tokenizer_2.pad_token = "!"  # as SDXL's second tokenizer
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(CLIPTextModel, WIDTH),
        text_encoder_2=_text_encoder(CLIPTextModelWithProjection, WIDTH_2, projection_dim=WIDTH_2),
        tokenizer=tokenizer_77,
        tokenizer_2=tokenizer_2,
        unet=_unet(WIDTH + WIDTH_2, sdxl=True),
        scheduler=diffusers.EulerDiscreteScheduler(),
    )
    folder = tmp_path_factory.mktemp("sdxl") / "base"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def longclip():
    return load_longclip_checkpoint(LONGCLIP_PT)


@pytest.fixture(scope="module")
def exported_sd(tmp_path_factory, sd_base) -> Path:
    out = tmp_path_factory.mktemp("export") / "sd"
    assert main(["export", "diffusers", "--model", str(LONGCLIP_PT), "--out", str(out), "--base", str(sd_base)]) == 0
    return out


@pytest.fixture(scope="module")
def exported_sdxl(tmp_path_factory, sdxl_base) -> Path:
    out = tmp_path_factory.mktemp("export") / "sdxl"
    assert main(["export", "diffusers", "--model", str(LONGCLIP_PT), "--out", str(out), "--base", str(sdxl_base)]) == 0
    return out


def _sd_pipe(base: Path, out: Path):
    return diffusers.StableDiffusionPipeline.from_pretrained(
        base,
        text_encoder=CLIPTextModel.from_pretrained(out, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(out, subfolder="tokenizer"),
    )


def _sdxl_pipe(base: Path, out: Path):
    return diffusers.StableDiffusionXLPipeline.from_pretrained(
        base,
        text_encoder=CLIPTextModel.from_pretrained(out, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(out, subfolder="tokenizer"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(out, subfolder="text_encoder_2"),
        tokenizer_2=CLIPTokenizer.from_pretrained(out, subfolder="tokenizer_2"),
    )


@torch.no_grad()
def _sd_embeds(pipe, prompts: list[str]) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(prompts, "cpu", 1, do_classifier_free_guidance=False)
    return embeds


@torch.no_grad()
def _sdxl_embeds(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


@torch.no_grad()
def _unet_out(pipe, embeds: torch.Tensor, **added) -> torch.Tensor:
    torch.manual_seed(0)
    latents = torch.randn(embeds.shape[0], 4, 8, 8)
    return pipe.unet(latents, 10, encoder_hidden_states=embeds, added_cond_kwargs=added or None).sample


def test_folders_have_248_positions(exported_sd, exported_sdxl):
    for out, names in ((exported_sd, ("",)), (exported_sdxl, ("", "_2"))):
        for suffix in names:
            config = json.loads((out / f"text_encoder{suffix}" / "config.json").read_text())
            assert config["max_position_embeddings"] == 248
            assert CLIPTokenizer.from_pretrained(out, subfolder=f"tokenizer{suffix}").model_max_length == 248
    assert json.loads((exported_sdxl / "text_encoder_2" / "config.json").read_text())["architectures"] == [
        "CLIPTextModelWithProjection"
    ]


def test_sd1_pipeline_takes_248_tokens(sd_base, exported_sd, longclip):
    pipe = _sd_pipe(sd_base, exported_sd)
    long_a, long_b = _prompt(100), _prompt(100, change_at=90)  # differ only past token 77
    embeds = _sd_embeds(pipe, [long_a, long_b])
    assert embeds.shape == (2, 248, WIDTH)
    # causal attention: positions before the change agree, the rest differ
    torch.testing.assert_close(embeds[0, :85], embeds[1, :85])
    assert (embeds[0, 91:] - embeds[1, 91:]).abs().max() > 1e-3
    out = _unet_out(pipe, embeds)
    assert (out[0] - out[1]).abs().max() > 1e-5  # the UNet's conditioning sees the tail of the prompt
    # the base pipeline truncates at 77: both prompts are the same to it
    base = diffusers.StableDiffusionPipeline.from_pretrained(sd_base)
    base_embeds = _sd_embeds(base, [long_a, long_b])
    assert base_embeds.shape == (2, 77, WIDTH)
    torch.testing.assert_close(base_embeds[0], base_embeds[1])
    # the exported encoder is Long-CLIP's text tower
    ids = pipe.tokenizer([long_a], padding="max_length", truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = longclip.text_model(ids).last_hidden_state
    torch.testing.assert_close(embeds[:1], expected, atol=1e-5, rtol=1e-5)


def test_sdxl_pipeline_takes_248_tokens(sdxl_base, exported_sdxl):
    pipe = _sdxl_pipe(sdxl_base, exported_sdxl)
    long_a, long_b = _prompt(100), _prompt(100, change_at=90)
    embeds, pooled = _sdxl_embeds(pipe, [long_a, long_b])
    assert embeds.shape == (2, 248, WIDTH + WIDTH_2) and pooled.shape == (2, WIDTH_2)
    torch.testing.assert_close(embeds[0, :85], embeds[1, :85])
    assert (embeds[0, 91:, :WIDTH] - embeds[1, 91:, :WIDTH]).abs().max() > 1e-3  # Long-CLIP's part
    assert (embeds[0, 91:, WIDTH:] - embeds[1, 91:, WIDTH:]).abs().max() > 1e-3  # the stretched second encoder
    assert (pooled[0] - pooled[1]).abs().max() > 1e-4  # pooled at the EOS, past the change
    time_ids = torch.tensor([[8.0, 8.0, 0.0, 0.0, 8.0, 8.0]] * 2)
    out = _unet_out(pipe, embeds, text_embeds=pooled, time_ids=time_ids)
    assert (out[0] - out[1]).abs().max() > 1e-5


def test_sdxl_stretch_keeps_short_prompts(sdxl_base, exported_sdxl):
    """The stretch keeps positions 0..19: a prompt within them gives the base's second-encoder embeddings there;
    a 77-token prompt gives what the stretched table's first 77 rows give the original encoder."""
    pipe = _sdxl_pipe(sdxl_base, exported_sdxl)
    base = diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_base)
    short = _prompt(10)  # BOS + 10 words + EOS: 12 tokens
    embeds, pooled = _sdxl_embeds(pipe, [short])
    base_embeds, base_pooled = _sdxl_embeds(base, [short])
    torch.testing.assert_close(embeds[:, :20, WIDTH:], base_embeds[:, :20, WIDTH:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, base_pooled, atol=1e-5, rtol=1e-5)

    full = _prompt(75)  # exactly 77 tokens with BOS and EOS
    ids = pipe.tokenizer_2([full], padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert int((ids != pipe.tokenizer_2.pad_token_id).sum()) == 77
    embeds, pooled = _sdxl_embeds(pipe, [full])
    base_encoder = base.text_encoder_2
    limited = _text_encoder(CLIPTextModelWithProjection, WIDTH_2, projection_dim=WIDTH_2)
    state = base_encoder.state_dict()
    key = "text_model.embeddings.position_embedding.weight"
    state[key] = stretch_positions(state[key])[:77]
    limited.load_state_dict(state)
    with torch.no_grad():
        expected = limited(ids[:, :77], output_hidden_states=True)
    torch.testing.assert_close(embeds[:, :77, WIDTH:], expected.hidden_states[-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, expected.text_embeds, atol=1e-5, rtol=1e-5)
    base_embeds, _ = _sdxl_embeds(base, [full])
    torch.testing.assert_close(embeds[:, :20, WIDTH:], base_embeds[:, :20, WIDTH:], atol=1e-5, rtol=1e-5)
    assert (embeds[:, 21:77, WIDTH:] - base_embeds[:, 21:77, WIDTH:]).abs().max() > 1e-4  # rows 20.. are stretched


def test_helper_matches_the_folders(sd_base, sdxl_base, exported_sd, exported_sdxl, longclip):
    prompts = [_prompt(100), _prompt(3)]
    pipe = use_longclip(diffusers.StableDiffusionPipeline.from_pretrained(sd_base), longclip)
    assert pipe.tokenizer.model_max_length == 248
    torch.testing.assert_close(_sd_embeds(pipe, prompts), _sd_embeds(_sd_pipe(sd_base, exported_sd), prompts))
    pipe = use_longclip(diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_base), longclip)
    assert pipe.text_encoder_2.config.max_position_embeddings == 248 and pipe.tokenizer_2.model_max_length == 248
    got, expected = _sdxl_embeds(pipe, prompts), _sdxl_embeds(_sdxl_pipe(sdxl_base, exported_sdxl), prompts)
    torch.testing.assert_close(got, expected)


def test_single_file_loads_as_text_encoder(exported_sdxl):
    for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        file = exported_sdxl / f"{name}.safetensors"
        with safe_open(str(file), "pt") as f:
            assert f.metadata()["max_position_embeddings"] == "248"
        state = load_file(file)
        assert state["text_model.embeddings.position_embedding.weight"].shape[0] == 248
        folder_model = cls.from_pretrained(exported_sdxl, subfolder=name)
        model = cls(folder_model.config).eval()
        if cls is CLIPTextModel and not hasattr(model, "text_model"):  # transformers 5: no text_model wrapper
            state = {k.removeprefix("text_model."): v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
        ids = torch.tensor([[49406, *range(300, 400), 49407]])
        with torch.no_grad():
            torch.testing.assert_close(model(ids).last_hidden_state, folder_model(ids).last_hidden_state)


def test_export_without_base_builds_the_clip_tokenizer(tmp_path, longclip):
    result = export_diffusers(longclip, tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(result.components["tokenizer"])
    ids = tokenizer(["a photo of a cat"]).input_ids[0]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # OpenAI CLIP's ids
    assert tokenizer.model_max_length == 248 and set(result.single_files) == {"text_encoder"}


def test_stretch_text_encoder_is_a_new_model():
    encoder = _text_encoder(CLIPTextModelWithProjection, WIDTH_2, projection_dim=WIDTH_2)
    stretched = stretch_text_encoder(encoder)
    assert encoder.config.max_position_embeddings == 77 and stretched.config.max_position_embeddings == 248
    assert type(stretched) is CLIPTextModelWithProjection
    assert torch.equal(
        stretched.text_model.embeddings.position_embedding.weight[:20],
        encoder.text_model.embeddings.position_embedding.weight[:20],
    )
    with pytest.raises(TypeError, match="CLIPModel"):
        longclip_text_encoder(encoder)


def test_cli_bad_inputs_are_one_line(tmp_path, capsys, sd_base):
    assert main(["export", "diffusers", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pt" in err
    wide = tmp_path / "wide"
    (wide / "text_encoder").mkdir(parents=True)
    (wide / "model_index.json").write_text("{}")
    (wide / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 768}))
    assert (
        main(["export", "diffusers", "--model", str(LONGCLIP_PT), "--out", str(tmp_path / "o"), "--base", str(wide)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "768" in err


def test_cli_half_precision_without_base(tmp_path):
    out = tmp_path / "half"
    assert main(["export", "diffusers", "--model", str(LONGCLIP_PT), "--out", str(out), "--dtype", "float16"]) == 0
    state = load_file(out / "text_encoder.safetensors")
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert set(p.name for p in out.iterdir()) == {"text_encoder", "tokenizer", "text_encoder.safetensors"}
    assert CLIPTokenizer.from_pretrained(out, subfolder="tokenizer")("a photo").input_ids == [49406, 320, 1125, 49407]
