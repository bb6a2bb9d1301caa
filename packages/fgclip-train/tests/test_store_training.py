"""Training from a record store (``fgclip-data store build``): the same losses as from the JSON records it was
built from (same seed, same order); a killed run resumes mid-epoch in the uninterrupted order with loader
workers; two processes equal one; bad stores stop the run with one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_data.store import build_store
from fgclip_train.cli import main
from fgclip_train.config import load_config
from fgclip_train.loop import train


def _torchrun(nproc: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = (f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={port}")
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def store_set(tmp_path_factory):
    """FG-Shapes records, and a store built from its training records (few rows per batch and part, so the
    reads cross batches and parts)."""
    root = tmp_path_factory.mktemp("store-training")
    generate(root / "fgshapes", GenerateOptions(n=120, seed=4, workers=1))
    build_store([root / "fgshapes" / "jsonfiles" / "train"], root / "store", batch_rows=8, part_rows=32)
    return root


def _data(root: Path, train: Path) -> list[str]:
    fgshapes = root / "fgshapes"
    return [
        f"--data.train={train}",
        f"--data.val={fgshapes / 'jsonfiles' / 'val'}",
        f"--data.images={fgshapes / 'grit-12m'}",
    ]


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]  # a resumed run logs the replayed steps again: the last one wins
    return out


def _overrides(tiny: list[str], out: Path) -> list[str]:
    return [*(o for o in tiny if not o.startswith("--runtime.output_dir")), f"--runtime.output_dir={out}"]


def test_store_trains_with_the_losses_of_its_json_records(store_set, tiny_overrides, tmp_path):
    """12 steps (past the first epoch) of stage 2 with random region captions: step for step the same losses."""
    losses = {}
    for name, train_from in (("json", store_set / "fgshapes" / "jsonfiles" / "train"), ("store", store_set / "store")):
        out = tmp_path / name
        overrides = [
            *_overrides(tiny_overrides, out),
            *_data(store_set, train_from),
            "--schedule.max_steps=14",
            "--data.val_limit=8",
            "--runtime.eval_after=false",
        ]
        train(load_config(overrides=overrides))
        losses[name] = _losses(out)
    assert len(losses["json"]) == 14 and losses["store"].keys() == losses["json"].keys()
    for step, loss in losses["json"].items():
        assert abs(losses["store"][step] - loss) <= 1e-6 * max(1.0, abs(loss)), (step, loss, losses["store"][step])


def test_bad_store_stops_the_run_with_one_line(store_set, tiny_overrides, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in (store_set / "store").iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    part = broken / "part-00001.arrow"
    part.write_bytes(part.read_bytes()[:-64])
    args = [*_overrides(tiny_overrides, tmp_path / "run"), *_data(store_set, broken), "--schedule.max_steps=1"]
    assert main(args, "stage2", stage=2) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "part-00001.arrow" in err and "truncated" in err


def test_store_with_chinese_records_is_refused_in_one_line(store_set, tiny_overrides, tmp_path, capsys):
    args = [
        *_overrides(tiny_overrides, tmp_path / "run"),
        *_data(store_set, store_set / "store"),
        f"--data.train_cn={store_set / 'fgshapes' / 'jsonfiles' / 'train'}",
    ]
    assert main(args, "stage2", stage=2) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.train_cn" in err and "record store" in err


def _stage2(args: list[str], env: dict) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fgclip_train.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow
def test_store_run_killed_and_resumed_mid_epoch_keeps_the_order(store_set, tiny_overrides, clean_env, tmp_path):
    """2 loader workers, 24 steps over two epochs; SIGKILL after the step-8 checkpoint, rerun: the later losses
    are the uninterrupted run's."""
    env = clean_env()

    def command(out: Path) -> list[str]:
        return [
            *_overrides(tiny_overrides, out),
            *_data(store_set, store_set / "store"),
            "--data.workers=2",
            "--schedule.max_steps=24",
            "--runtime.save_every=4",
            "--runtime.save_total_limit=2",
            "--runtime.eval_before=false",
            "--runtime.eval_after=false",
        ]

    full, killed = tmp_path / "full", tmp_path / "killed"
    _stage2(command(full), env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fgclip_train.cli", *command(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not (killed / "checkpoint-0000008").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoint-0000024").exists(), "the run finished before the kill"
    resumed_from = max(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*"))
    _stage2(command(killed), env)
    a, b = _losses(full), _losses(killed)
    later = list(range(resumed_from + 1, 25))
    assert later and all(s in b for s in later)
    for s in later:
        assert abs(a[s] - b[s]) <= 1e-5 * max(1.0, abs(a[s])), (s, a[s], b[s])
    epochs = {json.loads(line).get("epoch") for line in (full / "metrics.jsonl").read_text().splitlines()}
    assert {0, 1} <= epochs, "the run should cross an epoch boundary"


@pytest.mark.slow
def test_two_processes_on_a_store_equal_one(store_set, tiny_overrides, clean_env, tmp_path):
    """torchrun with 2 ranks x 4 samples over the store gives the weights of 1 rank x 8 (global losses)."""
    common = [
        "stage2",
        *(o for o in tiny_overrides if "batch_size" not in o and "output_dir" not in o),
        *_data(store_set, store_set / "store"),
        "--loss.region=false",
        "--loss.hard_negatives=false",
        "--schedule.max_steps=2",
        "--runtime.eval_before=false",
        "--runtime.eval_after=false",
        "--data.workers=1",
    ]
    runs = {}
    for nproc, batch in ((2, 4), (1, 8)):
        out = tmp_path / f"n{nproc}"
        run = _torchrun(
            nproc,
            "-m",
            "fgclip_train.cli",
            *common,
            f"--schedule.batch_size={batch}",
            f"--runtime.output_dir={out}",
            env=clean_env(OMP_NUM_THREADS="1"),
        )
        assert run.returncode == 0, run.stderr[-3000:]
        runs[nproc] = load_file(out / "checkpoint-0000002" / "model" / "model.safetensors")
    assert runs[1].keys() == runs[2].keys()
    for key in runs[1]:
        torch.testing.assert_close(runs[2][key], runs[1][key], atol=2e-5, rtol=1e-4, msg=key)
