"""A run killed with SIGKILL and resumed reproduces the uninterrupted run's later losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]  # a resumed run logs the replayed steps again: the last one wins
    return out


def _command(overrides: list[str], out: Path, command: str = "stage2") -> list[str]:
    args = [o for o in overrides if not o.startswith("--runtime.output_dir")]
    return [
        sys.executable,
        "-m",
        "fgclip_train.cli",
        command,
        *args,
        f"--runtime.output_dir={out}",
        "--schedule.max_steps=40",
        "--runtime.save_every=4",
        "--runtime.save_total_limit=2",
        "--runtime.eval_before=false",
        "--runtime.eval_after=false",
        "--data.workers=0",
    ]


def _checked(command: list[str], env: dict) -> None:
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow  # trains, kills the process and resumes it, twice
@pytest.mark.parametrize(("command", "stage"), [("stage2", 0), ("stage2", 2), ("stage1", 0)])
def test_sigkill_then_resume_reproduces_losses(command, stage, tiny_overrides, fgshapes_cache, tmp_path, clean_env):
    """ZeRO stage 0 (the FG-Shapes presets) and ZeRO-2 (the full-size presets) checkpoints both resume exactly."""
    tiny_overrides = [*tiny_overrides, f"--runtime.zero_stage={stage}"]
    env = clean_env(FGCLIP_CACHE=str(fgshapes_cache))
    full, killed = tmp_path / "full", tmp_path / "killed"
    _checked(_command(tiny_overrides, full, command), env)

    proc = subprocess.Popen(
        _command(tiny_overrides, killed, command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-0000008").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoint-0000040").exists(), "the run finished before the kill"
    resumed_from = max(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*"))

    _checked(_command(tiny_overrides, killed, command), env)
    a, b = _losses(full), _losses(killed)
    later = [s for s in range(resumed_from + 1, 41)]
    assert later and all(s in b for s in later)
    for s in later:
        assert abs(a[s] - b[s]) <= 1e-5 * max(1.0, abs(a[s])), (s, a[s], b[s])
    assert json.loads((killed / "results.json").read_text())["steps"] == 40
