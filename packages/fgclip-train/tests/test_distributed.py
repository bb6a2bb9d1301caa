"""Two CPU processes (gloo) give the loss and gradients of one process over the same global batch — the
all-gather of features keeps the gradient — and DeepSpeed ZeRO-2 / ZeRO-3 runs on two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fgclip_data.fgshapes.generate import GenerateOptions, generate

pytestmark = pytest.mark.slow  # every test launches two training processes (torchrun)

HERE = Path(__file__).parent
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, *args: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    """``torchrun`` in a clean launcher environment (in-process runs of other tests leave theirs behind)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return subprocess.run(cmd, capture_output=True, text=True, env={**clean, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    generate(folder, GenerateOptions(n=24, seed=5, workers=1))
    return folder


@pytest.mark.parametrize("family", ["fgclip2", "fgclip"])
def test_two_processes_equal_one(family, shapes, tmp_path):
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"{nproc}.pt"
        run = _torchrun(nproc, str(HERE / "dist_gather_check.py"), family, str(shapes), str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        outs[nproc] = torch.load(out, weights_only=True)
    one, two = outs[1], outs[2]
    assert two["indices"] == one["indices"][:4]  # rank 0 of the pair holds the first half of the same batch
    torch.testing.assert_close(two["loss"], one["loss"], atol=1e-5, rtol=1e-5)
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 20
    for name in one["grads"]:
        torch.testing.assert_close(two["grads"][name], one["grads"][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize(("command", "stage"), [("stage2", 0), ("stage2", 2), ("stage2", 3), ("stage1", 2)])
def test_deepspeed_zero_on_two_cpu_processes(command, stage, tiny_overrides, fgshapes_cache, tmp_path):
    """The training commands under torchrun: both ranks step; the exported HF folder equals a one-process run
    over the same global batches (global losses only, where the two are the same objective: stage2 with its
    regional losses off, and stage1)."""
    regional_off = ["--loss.region=false", "--loss.hard_negatives=false"] if command == "stage2" else []
    common = (
        [command]
        + [o for o in tiny_overrides if "batch_size" not in o and "output_dir" not in o]
        + [
            *regional_off,
            "--schedule.max_steps=2",
            "--runtime.eval_before=false",
            "--runtime.eval_after=false",
            f"--runtime.zero_stage={stage}",
        ]
    )
    env = {"FGCLIP_CACHE": str(fgshapes_cache), "OMP_NUM_THREADS": "1"}
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
            env=env,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"stage: {1 if command == 'stage1' else 2}" in (out / "config.yaml").read_text()
        runs[nproc] = load_file(out / "checkpoint-0000002" / "model" / "model.safetensors")
    assert runs[1].keys() == runs[2].keys()
    for key in runs[1]:
        torch.testing.assert_close(runs[2][key], runs[1][key], atol=2e-5, rtol=1e-4, msg=key)


def test_two_ranks_survive_corrupt_images_and_stream_shards(tiny_overrides, tmp_path):
    """Corrupt images leave the ranks with batches of different sizes (the gathers pad and trim them), and a
    shard stream whose samples do not split evenly over 2 ranks × 2 workers still gives both ranks the same
    steps, across an epoch boundary."""
    from fgclip_data.shards import write_shards

    data = tmp_path / "shapes"
    generate(data, GenerateOptions(n=60, seed=9, workers=1))
    images = sorted((data / "grit-12m").rglob("*.jpg"))
    for broken in images[::5][:9]:
        broken.write_bytes(b"not a jpeg")
    shards = tmp_path / "shards"
    manifest = write_shards(data / "jsonfiles" / "train", data / "grit-12m", shards, shard_size=7)
    # 45 samples over 4 consumers: 12, 11, 11, 11, i.e. 3 + 2 batches of 4 on rank 0 and 2 + 2 on rank 1
    assert manifest.samples == 45
    common = [o for o in tiny_overrides if "batch_size" not in o and "output_dir" not in o] + [
        "--schedule.batch_size=4",
        "--runtime.eval_before=false",
        "--runtime.eval_after=false",
        "--runtime.save_total_limit=1",
    ]
    sources = {
        "records": [f"--data.train={data / 'jsonfiles' / 'train'}", f"--data.images={data / 'grit-12m'}"],
        "shards": [f"--data.shards={shards}", "--data.workers=2"],
    }
    for name, args in sources.items():
        out = tmp_path / name
        steps = 8 if name == "records" else 10  # an epoch of the shards is 4 steps on both ranks
        run = _torchrun(
            2,
            "-m",
            "fgclip_train.cli",
            *common,
            *args,
            f"--schedule.max_steps={steps}",
            f"--runtime.output_dir={out}",
            env={"OMP_NUM_THREADS": "1"},
            timeout=400,
        )
        assert run.returncode == 0, (name, run.stderr[-3000:])
        results = json.loads((out / "results.json").read_text())
        assert results["steps"] == steps
        if name == "records":
            assert results["skipped"].get("corrupt image (UnidentifiedImageError)", 0) > 0
        else:
            epochs = [json.loads(line).get("epoch") for line in (out / "metrics.jsonl").read_text().splitlines()]
            assert max(e for e in epochs if e is not None) >= 2


def test_an_empty_batch_on_one_rank_is_skipped_by_all(tmp_path):
    run = _torchrun(2, str(HERE / "dist_any_rank.py"), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["True False", "True False"]
