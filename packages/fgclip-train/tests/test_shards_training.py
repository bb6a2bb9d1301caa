"""Stage 2 streamed from WebDataset shards: trains, resumes mid-epoch in the uninterrupted order (loader workers
included), gives every rank the same number of steps, keeps bilingual batches monolingual, and refuses
ambiguous or incomplete sources."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_data.shards import write_shards
from fgclip_train.config import load_config


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """FG-Shapes (English and Chinese records) written as shards; the validation records stay loose."""
    root = tmp_path_factory.mktemp("shard-training")
    generate(root / "fgshapes", GenerateOptions(n=120, seed=4, workers=1, lang="both"))
    jsonfiles, images = root / "fgshapes" / "jsonfiles", root / "fgshapes" / "grit-12m"
    write_shards(jsonfiles / "train", images, root / "en", shard_size=16)
    write_shards(jsonfiles / "train_cn", images, root / "cn", shard_size=16)
    return root


def _sources(shard_set: Path) -> list[str]:
    fgshapes = shard_set / "fgshapes"
    return [
        f"--data.shards={shard_set / 'en'}",
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


def _stage2(args: list[str], env: dict) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fgclip_train.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow  # trains, stops and resumes from shards
def test_trains_from_shards_and_resumes_mid_epoch_in_order(shard_set, tiny_overrides, clean_env, tmp_path):
    """16 steps over two epochs with 2 loader workers; the run is cut back to its step-9 checkpoint (mid-epoch,
    an odd number of batches into it, so the resumed loader must rotate its workers) and continued: the later
    losses are the uninterrupted run's."""
    out = tmp_path / "run"
    args = [
        *(o for o in tiny_overrides if not o.startswith("--runtime.output_dir")),
        *_sources(shard_set),
        "--data.workers=2",
        "--data.shuffle_buffer=8",
        "--schedule.max_steps=16",
        "--runtime.save_every=3",
        "--runtime.save_total_limit=null",
        "--runtime.eval_after=false",
        f"--runtime.output_dir={out}",
    ]
    env = clean_env()
    _stage2(args, env)
    full = _losses(out)
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 16 and results["before"]["i2t_r1_short"] >= 0
    epochs = {json.loads(line).get("epoch") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {0, 1} <= epochs, "the run should cross an epoch boundary"

    for late in out.glob("checkpoint-*"):
        if int(late.name.split("-")[1]) > 9:
            shutil.rmtree(late)
    _stage2(args, env)
    resumed = _losses(out)
    for step in range(10, 17):
        assert abs(resumed[step] - full[step]) <= 1e-5 * max(1.0, abs(full[step])), (step, full, resumed)


def test_every_rank_takes_the_same_steps_and_languages_stay_apart(shard_set):
    from fgclip_data import ImageResize, SampleOptions
    from fgclip_train.batches import ShardBatches

    def batches(rank: int, workers: int, batch: int = 5) -> ShardBatches:
        return ShardBatches(
            [shard_set / "en", shard_set / "cn"],
            options=SampleOptions(),
            resize=ImageResize(square=32),
            collate=list,
            batch=batch,
            rank=rank,
            world=3,
            workers=workers,
            seed=1,
            shuffle_buffer=4,
        )

    with pytest.raises(ValueError, match=r"do not fill one batch of 50 on each of 3 rank\(s\) x 2"):
        batches(0, workers=2, batch=50)
    for workers in (0, 2):
        ranks = [batches(rank, workers) for rank in range(3)]
        assert len({len(b) for b in ranks}) == 1  # equal epoch lengths, though the ranks' shares differ
        plan = ranks[0].plan(epoch=1)
        assert all(b.plan(epoch=1) == plan for b in ranks) and len(set(plan)) == 2
        seen = set()
        for b in ranks:
            steps = list(b.epoch(1))
            assert len(steps) == len(b) and all(len(step) == 5 for step in steps)
            for group, step in zip(plan, steps, strict=True):
                assert {s.chinese for s in step} == {group == 1}  # every batch holds one language
                keys = {(group, s.source) for s in step}  # keys repeat across the two folders
                assert not keys & seen
                seen |= keys
        resumed = batches(0, workers)
        assert [[s.source for s in step] for step in resumed.epoch(1, start=4)] == [
            [s.source for s in step] for step in list(ranks[0].epoch(1))[4:]
        ]


def test_sources_are_validated(shard_set, tiny_overrides, tmp_path):
    with pytest.raises(ValidationError, match="two training sources"):
        load_config(overrides=["--data.shards=x", "--data.train=y", "--data.images=z"])
    with pytest.raises(ValidationError, match=r"shards_cn needs data\.shards"):
        load_config(overrides=["--data.shards_cn=x"])
    with pytest.raises(ValidationError, match=r"data\.val needs data\.images"):
        load_config(overrides=["--data.shards=x", "--data.val=y"])
    partial = tmp_path / "partial"
    write_shards(
        shard_set / "fgshapes" / "jsonfiles" / "train",
        shard_set / "fgshapes" / "grit-12m",
        partial,
        shard_size=16,
        stop_after_shards=1,
    )
    from fgclip_train.loop import train

    with pytest.raises(ValueError, match="incomplete"):
        train(load_config(overrides=[*tiny_overrides, f"--data.shards={partial}", "--runtime.eval_before=false"]))
