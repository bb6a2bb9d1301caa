"""The validated configuration: presets, YAML files, overrides and --show-config."""

from __future__ import annotations

import pytest
import yaml

from fgclip_model.stage2 import LossWeights
from fgclip_train.cli import main
from fgclip_train.config import PRESETS, load_config
from fgclip_train.families import get_family, loss_weights


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset):
    config = load_config(preset=preset)
    assert config.preset == preset


def test_reference_recipes():
    v1 = load_config(preset="fgclip-v1")
    assert (v1.optim.lr, v1.optim.weight_decay, v1.schedule.warmup_steps, v1.schedule.batch_size) == (
        1e-6,
        0.001,
        200,
        512,
    )
    weights = loss_weights(v1, get_family("fgclip"))
    assert weights.region == 0.1 and weights.hard == 0.5 and v1.runtime.precision == "bf16"
    v2 = load_config(preset="fgclip2")
    assert v2.optim.betas == (0.9, 0.98) and v2.optim.eps == 1e-6 and v2.schedule.epochs == 6
    weights = loss_weights(v2, get_family("fgclip2"))
    assert v2.schedule.warmup_ratio == 0.03 and (weights.region, weights.tic, weights.hard) == (0.2, 0.1, 0.5)
    # a configured weight replaces the model's default, the others stay
    v2.loss.region_weight = 1.0
    assert loss_weights(v2, get_family("fgclip2")) == LossWeights(region=1.0)
    assert v2.model.from_base and v2.data.max_num_patches is None


def test_file_then_overrides(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"preset": "fgclip-v1", "schedule": {"batch_size": 64}, "optim": {"lr": 3e-6}}))
    config = load_config(file, ["--schedule.batch_size=16", "--loss.hard_negatives=false", "--optim.betas=[0.8, 0.9]"])
    assert config.preset == "fgclip-v1" and config.schedule.batch_size == 16 and config.optim.lr == 3e-6
    assert config.loss.hard_negatives is False and config.optim.betas == (0.8, 0.9)
    assert config.optim.weight_decay == 0.001  # from the preset


def test_invalid_configs_are_clear(capsys):
    with pytest.raises(ValueError, match=r"schedule\.batch_sise"):
        load_config(overrides=["--schedule.batch_sise=3"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(preset="nope")
    assert main(["--schedule.batch_size=many"]) == 2
    assert "invalid configuration" in capsys.readouterr().err
    assert main(["oops"]) == 2
    for bad in (["--data.min_num_patches=300"], ["--preset=fgclip2", "--data.min_num_patches=128"]):
        with pytest.raises(ValueError, match=r"data\.min_num_patches .* must be set and at least as large"):
            load_config(overrides=bad)
    assert main(["--data.min_num_patches=300"]) == 2
    # DeepSpeed's bf16 mode at ZeRO stage 0 (the FG-Shapes presets' stage) would write checkpoints without the fp32
    # master weights: refused before anything starts, while bf16 at ZeRO-2 and bf16 autocast at stage 0 are fine
    with pytest.raises(ValueError, match=r"precision=bf16 keeps fp32 master .*zero_stage=1, 2 or 3"):
        load_config(overrides=["--runtime.precision=bf16"])
    assert main(["--runtime.precision=bf16"]) == 2
    load_config(overrides=["--runtime.precision=bf16", "--runtime.zero_stage=2"])
    load_config(overrides=["--runtime.precision=bf16-autocast"])


def test_show_config_round_trips(capsys, tmp_path):
    assert main(["--preset", "fgclip2", "--show-config", "--optim.lr=5e-6"]) == 0
    printed = capsys.readouterr().out
    file = tmp_path / "shown.yaml"
    file.write_text(printed)
    again = load_config(file)
    assert again.optim.lr == 5e-6 and again.preset == "fgclip2"
    assert again == load_config(preset="fgclip2", overrides=["--optim.lr=5e-6"])


def test_stage1_command_presets_and_refusals(capsys):
    from fgclip_train.cli import stage1, stage2

    assert stage1(["--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "preset: fgshapes-stage1" in shown and "stage: 1" in shown and "region: false" in shown
    assert stage1(["--preset", "fgclip2", "--show-config"]) == 2  # a stage-2 preset
    assert "stage-2 run" in capsys.readouterr().err
    assert stage2(["--preset", "fgshapes-stage1", "--show-config"]) == 2
    assert stage1(["--show-config", "--loss.region=true"]) == 2  # stage 1 is global alignment only
    assert "global alignment only" in capsys.readouterr().err
    config = load_config(preset="fgclip2-stage1")
    assert config.stage == 1 and config.model.from_base and not config.loss.hard_negatives


def test_reference_presets_need_their_starting_checkpoint(tmp_path, capsys):
    """`stage2 --preset fgclip2` used to train a full-size model from random weights on FG-Shapes."""
    from fgclip_train.cli import main

    for preset, needed in (("fgclip2", "SigLIP 2"), ("fgclip-v1", "FG-CLIP v1"), ("fgclip2-stage1", "SigLIP 2")):
        code = main(["--preset", preset, f"--runtime.output_dir={tmp_path / preset}"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"preset {preset} starts from" in err and needed in err and "--model.init" in err
        assert not (tmp_path / preset).exists()  # refused before anything was written


def test_init_from_a_run_folder_takes_its_newest_checkpoint(tmp_path):
    from fgclip_train.preflight import resolve_init

    run = tmp_path / "stage1-run"
    for step in (4, 8):
        model = run / f"checkpoint-{step:07d}" / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}")
        (model.parent / "trainer_state.json").write_text("{}")
    (run / ".tmp-checkpoint-0000012").mkdir()  # an incomplete save is never taken
    config = resolve_init(load_config(overrides=[f"--model.init={run}"]))
    assert config.model.init == str(run / "checkpoint-0000008" / "model")
    folder = run / "checkpoint-0000004" / "model"
    assert resolve_init(load_config(overrides=[f"--model.init={folder}"])).model.init == str(folder)


def test_a_refused_run_keeps_the_callers_process_group(tmp_path, capsys):
    """In a process that already trained (its one-process group is up, DeepSpeed caches it), a command that
    refuses to start must not end that group: every later in-process run would fail on the cached group."""
    import torch.distributed as dist

    from fgclip_train.cli import main
    from fgclip_train.engine import setup_distributed

    setup_distributed()  # as an earlier in-process run leaves it
    group = dist.group.WORLD
    assert main(["--preset", "fgclip2", f"--runtime.output_dir={tmp_path / 'x'}"]) == 2
    assert dist.is_initialized() and dist.group.WORLD is group


def test_finetune_presets_start_from_a_checkpoint_with_lora(capsys):
    for preset, family in (("fgclip2-finetune", "fgclip2"), ("fgclip-finetune", "fgclip")):
        config = load_config(preset=preset)
        assert config.model.family == family and config.model.lora is not None and config.model.lora.rank == 16
        assert config.loss.region and config.loss.hard_negatives and config.runtime.precision == "auto"
        assert main(["--preset", preset]) == 2  # no model.init: refused before anything is built
        assert "set --model.init" in capsys.readouterr().err
    full = load_config(preset="fgclip2-finetune", overrides=["--model.lora=null", "--model.freeze.text=true"])
    assert full.model.lora is None and full.model.freeze.text and not full.model.freeze.vision
    with pytest.raises(ValueError, match="modules"):
        load_config(overrides=["--model.lora={modules: [qkv]}"])


def test_precision_auto_is_autocast_on_a_gpu_only(monkeypatch):
    import torch

    from fgclip_train.engine import deepspeed_config, resolve_precision

    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert "torch_autocast" not in deepspeed_config(load_config(overrides=["--runtime.precision=auto"]), 32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ds = deepspeed_config(load_config(overrides=["--runtime.precision=auto"]), 32)
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and ds["bf16"]["enabled"] is False


def test_override_under_a_scalar_is_one_line(capsys, tmp_path):
    """``--optim=3 --optim.lr=1``: optim is no longer a section; one line naming both, exit 2, no traceback."""
    assert main(["--optim=3", "--optim.lr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optim.lr=1" in err and "optim was set to 3" in err
    assert "Traceback" not in err
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"schedule": 5}))
    with pytest.raises(ValueError, match="schedule was set to 5"):
        load_config(file, ["--schedule.batch_size=4"])


def test_presets_are_registered_through_a_call_never_replaced():
    from fgclip_train.config import register_presets

    register_presets({"fgshapes": PRESETS["fgshapes"]})  # the same settings again (a second register()): accepted
    with pytest.raises(ValueError, match=r"presets \['fgshapes'\] are already registered"):
        register_presets({"fgshapes": {"stage": 1}})
    assert PRESETS["fgshapes"]["model"]["family"] == "fgclip2"


def test_min_num_patches_reaches_the_fgclip2_collator():
    """``data.min_num_patches`` (a per-batch patch budget) is the collator's, seeded by the run's seed."""
    from fgclip_model.tiny import fgclip2_config
    from fgclip_train.families import get_family

    config = load_config(overrides=["--data.min_num_patches=128", "--schedule.seed=5"])
    collate = get_family("fgclip2").build_collator(config, None, fgclip2_config(), None)
    assert (collate.min_num_patches, collate.max_num_patches, collate.seed) == (128, 256, 5)
    fixed = load_config(overrides=["--data.min_num_patches=null"])  # the default preset draws from 128-256
    assert get_family("fgclip2").build_collator(fixed, None, fgclip2_config(), None).min_num_patches is None
    assert load_config().data.min_num_patches == 128


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant"])
def test_learning_rate_schedules(scheduler):
    """A linear warm-up, then the chosen decay: cosine and linear both reach zero at the last step (linear falls
    evenly, cosine slowly at first), constant stays at the peak."""
    from fgclip_train.engine import lr_lambda

    config = load_config(overrides=[f"--schedule.scheduler={scheduler}", "--schedule.warmup_steps=10"])
    factor = lr_lambda(config, 110)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    middle, quarter, end = factor(60), factor(35), factor(110)
    expected = {"cosine": (0.5, 0.8536, 0.0), "linear": (0.5, 0.75, 0.0), "constant": (1.0, 1.0, 1.0)}[scheduler]
    assert (middle, quarter, end) == pytest.approx(expected, abs=1e-4)
