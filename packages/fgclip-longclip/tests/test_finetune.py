"""The finetune command on fgclip-train's loop: the loss falls, the first 20 positions stay bit-identical,
checkpoints load with fgclip_model, the reference preset is explicit."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import fgclip_model
from fgclip_longclip.cli import main
from fgclip_longclip.family import register
from fgclip_train.config import load_config
from fgclip_train.loop import train


def test_finetune_steps_lower_the_loss_and_keep_the_frozen_rows(tiny, tmp_path):
    register()
    config = load_config(
        preset="longclip-fgshapes",
        overrides=[*tiny, "--schedule.max_steps=12", "--optim.lr=3e-3", "--runtime.save_every=1"],
    )
    results = train(config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert set(results["after"]) == {"i2t_r1_long", "t2i_r1_long", "i2t_r1_short", "t2i_r1_short"}
    key = "text_model.embeddings.position_embedding.weight"
    first = load_file(tmp_path / "run" / "checkpoint-0000011" / "model" / "model.safetensors")[key]
    last = load_file(tmp_path / "run" / "checkpoint-0000012" / "model" / "model.safetensors")[key]
    assert first.shape == (248, 32)
    assert torch.equal(first[:20], last[:20]) and not torch.equal(first[20:], last[20:])
    model, processor = fgclip_model.load(tmp_path / "run" / "checkpoint-0000012" / "model")
    assert type(model).__name__ == "CLIPModel" and model.config.text_config.max_position_embeddings == 248
    ids = processor(text=["an image of two shapes " * 20], walk_type="long")["input_ids"]
    assert ids.shape[1] > 77  # long captions beyond CLIP's 77 tokens
    with torch.no_grad():
        assert torch.isfinite(model.get_text_features(input_ids=ids).pooler_output).all()


def test_finetune_to_a_longer_text_length(tiny, tmp_path):
    """--model.text_length=512 stretches 77 -> 512 (the first 20 rows frozen), tokenises long captions to 512 and
    saves a checkpoint fgclip_model loads as Long-CLIP with a 512-token processor."""
    from fgclip_model.longclip import stretch_positions

    register()
    config = load_config(
        preset="longclip-fgshapes",
        overrides=[*tiny, "--schedule.max_steps=3", "--model.text_length=512", "--runtime.eval_before=false"],
    )
    from fgclip_longclip.family import build_collator, build_model

    model = build_model(config, None)
    table = model.clip.text_model.embeddings.position_embedding.weight
    assert table.shape == (512, 32)
    collator = build_collator(config, None, model.config, 64)
    assert collator.long_length == 512
    results = train(config)
    assert results["steps"] == 3 and set(results["after"]) >= {"i2t_r1_long"}
    folder = tmp_path / "run" / "checkpoint-0000003" / "model"
    saved = load_file(folder / "model.safetensors")["text_model.embeddings.position_embedding.weight"]
    assert saved.shape == (512, 32)
    torch.manual_seed(config.schedule.seed)
    loaded, processor = fgclip_model.load(folder)
    assert type(loaded).__name__ == "CLIPModel" and loaded.config.text_config.max_position_embeddings == 512
    ids = processor(text=["an image of two shapes " * 80, "shapes " * 600], walk_type="long")["input_ids"]
    assert ids.shape[1] == 512  # past Long-CLIP's 248, cut at 512
    with torch.no_grad():
        assert torch.isfinite(loaded.get_text_features(input_ids=ids).pooler_output).all()
    assert stretch_positions(torch.zeros(77, 2), 512).shape == (512, 2)


def test_text_length_is_longclip_only():
    import pytest

    from fgclip_longclip.family import register
    from fgclip_train import get_family
    from fgclip_train.preflight import RunError, check_family_options

    register()
    fgclip2 = load_config(overrides=["--model.text_length=512"])  # the FG-CLIP 2 default preset
    with pytest.raises(RunError, match=r"text_length is Long-CLIP's stretched text length.*fgclip2 family"):
        check_family_options(fgclip2, get_family(fgclip2.model.family))
    longclip = load_config(preset="longclip-fgshapes", overrides=["--model.text_length=512"])
    check_family_options(longclip, get_family(longclip.model.family))  # Long-CLIP takes it


def test_presets_and_help(capsys):
    assert main(["--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "preset: longclip-fgshapes" in shown and "family: longclip" in shown
    assert main(["--preset", "longclip", "--show-config"]) == 0
    reference = load_config(preset="longclip")
    assert (reference.optim.lr, reference.optim.weight_decay, reference.schedule.warmup_steps) == (1e-6, 0.01, 200)
    assert reference.schedule.epochs == 6 and reference.schedule.batch_size == 128
    assert reference.model.extra_logit_scale == 4.6052 and reference.data.short_prefix == ""


def test_finetune_resume_never_unpickles_code(tiny, tmp_path, plant_pickle):
    """finetune resumes through fgclip-train's checkpointer: a planted pickle is refused, one line, exit 2."""
    import pytest

    from fgclip_train.checkpoint import UnsafeCheckpoint

    register()
    quick = [*tiny, "--schedule.max_steps=2", "--runtime.eval_before=false", "--runtime.eval_after=false"]
    train(load_config(preset="longclip-fgshapes", overrides=quick))
    marker = tmp_path / "marker"
    optim = tmp_path / "run" / "checkpoint-0000002" / "deepspeed" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    plant_pickle(optim, marker)
    with pytest.raises(UnsafeCheckpoint, match=r"zero_pp_rank_0_mp_rank_00_optim_states\.pt: refused"):
        train(load_config(preset="longclip-fgshapes", overrides=[*quick, "--schedule.max_steps=4"]))
    assert not marker.exists()


def test_finetune_refuses_a_planted_init_in_one_line(tiny, tmp_path, plant_pickle, capsys):
    """``finetune --model.init=evil.pt`` with a pickle that would run code: refused before anything runs, one line,
    exit 2, no traceback."""
    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    plant_pickle(evil, marker, key="state_dict")
    assert main([*tiny, f"--model.init={evil}", "--runtime.eval_before=false"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("finetune:")]
    assert len(lines) == 1 and "model.init" in lines[0] and "refused" in lines[0] and "io.open" in lines[0]
    assert "Traceback" not in err and "[rank0]" not in err
    assert not marker.exists()
