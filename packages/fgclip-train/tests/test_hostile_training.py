"""Hostile input to stage2: planted pickles in a checkpoint to resume, a reused output_dir, bad settings and files.
Nothing executes, nothing mixes, every refusal is one line naming the setting or file, before DeepSpeed starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fgclip_train.checkpoint import UnsafeCheckpoint
from fgclip_train.config import load_config
from fgclip_train.loop import train
from fgclip_train.preflight import RunError

QUICK = ["--schedule.max_steps=2", "--runtime.eval_before=false", "--runtime.eval_after=false"]


@pytest.mark.parametrize(
    ("victim", "stage"),
    [
        ("zero_pp_rank_0_mp_rank_00_optim_states.pt", 2),  # ZeRO-2's optimizer shard
        ("mp_rank_00_model_states.pt", 2),
        ("mp_rank_00_model_states.pt", 0),  # stage 0 (the FG-Shapes presets): the optimizer state lives here
        ("rng", 0),
    ],
)
def test_resume_never_unpickles_code(tiny_overrides, tmp_path, victim, stage, plant_pickle):
    tiny_overrides = [*tiny_overrides, f"--runtime.zero_stage={stage}"]
    train(load_config(overrides=[*tiny_overrides, *QUICK]))
    checkpoint = tmp_path / "run" / "checkpoint-0000002"
    marker = tmp_path / "marker"
    target = checkpoint / "rng" / "rank0.pt" if victim == "rng" else checkpoint / "deepspeed" / victim
    plant_pickle(target, marker)
    with pytest.raises(UnsafeCheckpoint, match=r"refused, it holds objects that only code execution could rebuild"):
        train(load_config(overrides=[*tiny_overrides, *QUICK, "--schedule.max_steps=4"]))
    assert not marker.exists()


def test_a_used_output_dir_is_refused_or_replaced_never_mixed(tiny_overrides, tmp_path):
    train(load_config(overrides=[*tiny_overrides, *QUICK, "--runtime.save_every=1"]))
    run = tmp_path / "run"
    (run / "notes.txt").write_text("the user's own file")
    with pytest.raises(RunError, match=r"holds an earlier run \(checkpoint-0000001, .*--runtime.overwrite=true"):
        train(load_config(overrides=[*tiny_overrides, *QUICK, "--runtime.resume=false"]))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000001", "checkpoint-0000002"]

    results = train(
        load_config(
            overrides=[
                *tiny_overrides,
                *QUICK,
                "--runtime.resume=false",
                "--runtime.overwrite=true",
                "--schedule.seed=7",
            ]
        )
    )
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-0000002"]  # the new run's only
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one run's rows, not two
    assert results["checkpoint"] == str(run / "checkpoint-0000002")
    assert (run / "notes.txt").read_text() == "the user's own file"  # overwrite removes only what a run wrote


def test_an_output_dir_without_a_checkpoint_is_not_resumed_into(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')  # a run killed before its first checkpoint
    with pytest.raises(RunError, match="no complete checkpoint to resume from"):
        train(load_config(overrides=[*tiny_overrides, *QUICK]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--optim.lr=0", "optim.lr: Input should be greater than 0"),
        ("--optim.lr=-1e-4", "optim.lr: Input should be greater than 0"),
        ("--schedule.batch_size=0", "schedule.batch_size: Input should be greater than 0"),
        ("--schedule.max_steps=0", "schedule.max_steps: Input should be greater than 0"),
        ("--optim.grad_clip=-1", "optim.grad_clip: Input should be greater than or equal to 0"),
        ("--schedule.grad_accum=0", "schedule.grad_accum: Input should be greater than 0"),
    ],
)
def test_bad_numbers_are_configuration_errors(override, message, capsys):
    from fgclip_train.cli import main

    assert main([override]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"stage2: invalid configuration: {message}"]


def test_show_config_states_the_bounds(capsys):
    from fgclip_train.cli import main

    assert main(["--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "  lr: 0.001  # > 0" in shown and "grad_clip: 1.0  # DeepSpeed gradient_clipping" in shown
    assert "batch_size: 32  # per-device micro batch; > 0" in shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not text (binary content)"),
        (b"optim:\n  lr: [1e-4\n", "is not valid YAML at line"),
        (b"- just\n- a list\n", "must be a mapping of sections"),
        (b'{"optim": {"lr": 1e-3}', "is not valid YAML at line"),  # truncated JSON
    ],
)
def test_malformed_config_files(tmp_path, content, message, capsys):
    from fgclip_train.cli import main

    (tmp_path / "c.yaml").write_bytes(content)
    assert main(["--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(tmp_path / "c.yaml") in err[0]
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_paths_and_broken_files_fail_before_training(tiny_overrides, tmp_path, golden):
    def refused(*overrides):
        with pytest.raises((RunError, FileNotFoundError)) as err:
            train(load_config(overrides=[*tiny_overrides, *QUICK, *overrides]))
        return str(err.value)

    assert "data.train: /no/such/records does not exist" in refused(
        "--data.train=/no/such/records", f"--data.images={tmp_path}"
    )
    assert "data.images" in refused(f"--data.train={tmp_path}", "--data.images=/no/such/images")
    assert "model.init: /no/such/model does not exist" in refused("--model.init=/no/such/model")

    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x00\xff\xfe\x81 not records\n")
    assert "holds no valid record" in refused(f"--data.train={binary}", f"--data.images={tmp_path}")

    model = tmp_path / "truncated-model"
    shutil.copytree(golden / "v2_s0_dynamic" / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "truncated safetensors file" in refused(f"--model.init={model}")
    weights.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert "over the format's limit" in refused(f"--model.init={model}")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_cli_prints_one_line_and_exits_2_before_deepspeed(tiny_overrides, tmp_path, clean_env, fgshapes_cache):
    command = [
        sys.executable,
        "-m",
        "fgclip_train.cli",
        *tiny_overrides,
        "--data.train=/nope",
        f"--data.images={tmp_path}",
    ]
    run = subprocess.run(command, env=clean_env(FGCLIP_CACHE=str(fgshapes_cache)), capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "stage2: data.train: /nope does not exist (fix the path or leave the setting out)"
    ]  # ~8 s here, the imports: no process group or engine starts
    assert not (tmp_path / "run").exists()
