"""Your own data in, a better model out, end to end at tiny sizes: a COCO-layout set -> ``fgclip-data import coco``
-> ``stage2 --preset fgclip2-finetune`` from a small FG-CLIP 2 checkpoint with a word-level tokenizer (its
vocabulary extended by the set's words) -> the checkpoint loads and ``benchmark --tasks coco,coco-box`` runs on
it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).parents[1] / "tools" / "finetune" / "make_coco_like.py"
TINY = [
    "--model.size.text_config.hidden_size=32",
    "--model.size.text_config.intermediate_size=64",
    "--model.size.text_config.num_attention_heads=2",
    "--model.size.vision_config.hidden_size=32",
    "--model.size.vision_config.intermediate_size=64",
    "--model.size.vision_config.num_attention_heads=2",
    "--model.size.vision_config.num_hidden_layers=1",
]


def _make_coco_like():
    spec = importlib.util.spec_from_file_location("make_coco_like", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _command(module: str, *args: str, env: dict) -> None:
    """``python -m module args`` as a user runs the command (its own process and process group); fails loudly."""
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{module} {' '.join(args)}\n{done.stderr[-3000:]}"


@pytest.mark.slow  # three tiny runs and a benchmark, each its own process: minutes on 2 CPU cores (9.5 on a busy one)
def test_import_finetune_benchmark(tmp_path):
    from transformers import AutoTokenizer

    import fgclip_model

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES} | {"FGCLIP_CACHE": str(tmp_path)}
    root = tmp_path / "tabletop"
    _make_coco_like().main(["--out", str(root), "--train", "20", "--val", "4", "--min-size", "64", "--max-size", "96"])
    coco = root / "coco"
    imported = tmp_path / "imported"
    _command(
        "fgclip_data.cli",
        *("import", "coco", "--images", str(coco / "images" / "train2017"), "--out", str(imported)),
        *("--captions", str(coco / "annotations" / "captions_train2017.json"), "--val-size", "4"),
        *("--instances", str(coco / "annotations" / "instances_train2017.json")),
        env=env,
    )

    steps = [
        "--schedule.max_steps=2",
        "--schedule.batch_size=8",
        "--data.max_num_patches=16",
        "--data.min_num_patches=null",
    ]
    base = tmp_path / "base"
    run = [*TINY, *steps, "--data.fgshapes_n=64", "--data.val_limit=8", f"--runtime.output_dir={base}"]
    _command("fgclip_train.cli", *run, "--runtime.eval_before=false", "--runtime.eval_after=false", env=env)
    start = base / "checkpoint-0000002" / "model"
    assert AutoTokenizer.from_pretrained(start).convert_tokens_to_ids("umbrella") == 3  # unknown to FG-Shapes

    tuned = tmp_path / "tuned"
    finetune = [
        "--preset=fgclip2-finetune",
        f"--model.init={start}",
        f"--data.train={imported / 'jsonfiles' / 'train'}",
        f"--data.val={imported / 'jsonfiles' / 'val'}",
        f"--data.images={imported / 'images'}",
        f"--runtime.output_dir={tuned}",
        "--model.lora={rank: 2, alpha: 4}",
        *steps,
    ]
    _command("fgclip_train.cli", *finetune, env=env)
    results = json.loads((tuned / "results.json").read_text())
    assert set(results["before"]) == set(results["after"]) and results["steps"] == 2
    # the held-out split before and after: retrieval, hard negatives and box classification (category names)
    assert set(results["after"]) >= {"i2t_r1_short", "hard_negative_acc", "box_cls_acc"}
    model_dir = tuned / "checkpoint-0000002" / "model"
    model, processor = fgclip_model.load(model_dir)
    tokenizer = processor.tokenizer
    names = ["apple", "banana", "cup", "umbrella", "kite"]
    assert tokenizer.unk_token_id not in tokenizer(" ".join(names))["input_ids"]
    assert model.config.text_config.vocab_size == len(tokenizer.get_vocab())

    out = tmp_path / "bench"
    args = ["--model", str(model_dir), "--tasks", "coco,coco-box", "--data-root", str(root), "--output", str(out)]
    _command("fgclip_eval.cli", *args, "--quiet", "--device", "cpu", "--max-num-patches", "16", env=env)
    scores = json.loads((out / "results.json").read_text())["results"]
    assert set(scores["coco"]) >= {"i2t_r1", "t2i_r1"} and scores["coco-box"]["n_boxes"] > 0
