"""Peak memory and trainable share of fine-tuning a B/16-sized FG-CLIP 2: full, frozen image tower, LoRA.

Each variant is the real ``stage2`` command in its own process (the FG-Shapes data, the loop, DeepSpeed ZeRO-2 on
the CPU, AdamW), started from one checkpoint of the released FG-CLIP 2 base geometry (SigLIP 2 base towers,
768 x 12 layers, Gemma's 256 000-token vocabulary, random weights) written once; the peak resident set of the
process (``ru_maxrss``) is read when it ends::

    uv run python tools/perf/finetune_memory.py --out tools/perf/results/cpu-finetune-memory.json

The image tower sees 256 patches (as FG-CLIP 2's 224 px evaluations), 4 images of up to 4 boxes with 10 hard
negatives each per step.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from fgclip_model.machine import cpu_line, cpu_record

VARIANTS = {
    "full": [],
    "frozen image tower": ["--model.freeze.vision=true"],
    "LoRA r=16 (attention + MLP)": ["--model.lora={rank: 16, alpha: 32}"],
}

# runs stage2 and prints its own peak resident set (KiB on Linux) as the last line
CHILD = """
import atexit, json, resource, sys
atexit.register(lambda: print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})))
from fgclip_train.cli import stage2
sys.exit(stage2(sys.argv[1:]))
"""


def write_base_checkpoint(folder: Path) -> None:
    """FG-CLIP 2 at the released base geometry (random weights); with no tokenizer beside it, stage2 builds a
    word-level one over the FG-Shapes records (its ids are a small part of the 256 000-row embedding table)."""
    import torch

    from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model
    from fgclip_model.tiny import tower

    width = tower(768, 12, 12, 4)
    config = FGCLIP2Config(
        text_config={**width, "vocab_size": 256000, "max_position_embeddings": 64, "projection_size": 768},
        vision_config={**width, "num_patches": 256, "patch_size": 16},
    )
    torch.manual_seed(0)
    FGCLIP2Model(config).save_pretrained(folder)


def run_variant(init: Path, out: Path, extra: list[str], steps: int, checkpointing: bool) -> dict:
    args = [
        f"--model.init={init}",
        f"--model.gradient_checkpointing={str(checkpointing).lower()}",
        "--data.fgshapes_n=64",
        "--data.max_num_patches=256",
        "--schedule.batch_size=4",
        f"--schedule.max_steps={steps}",
        "--runtime.eval_before=false",
        "--runtime.eval_after=false",
        f"--runtime.output_dir={out}",
        *extra,
    ]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"stage2 {' '.join(extra)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kib"]
    count = re.search(r"trainable parameters: ([\d,]+) of ([\d,]+)", proc.stdout)
    trainable, total = (int(g.replace(",", "")) for g in count.groups()) if count else (None, None)
    return {"peak_rss_mib": round(peak / 1024), "trainable": trainable, "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument(
        "--no-checkpointing", action="store_true", help="without activation checkpointing (the presets use it)"
    )
    parser.add_argument("--out", type=Path, default=Path("tools/perf/results/cpu-finetune-memory.json"))
    args = parser.parse_args(argv)
    cpu = cpu_record()
    print(cpu_line(cpu), flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "fgclip2-base"
        write_base_checkpoint(init)
        for name, extra in VARIANTS.items():
            out = Path(tmp) / re.sub(r"\W+", "-", name)
            rows[name] = run_variant(init, out, extra, args.steps, not args.no_checkpointing)
            print(name, rows[name], flush=True)
    result = {
        "cpu": cpu,
        "steps": args.steps,
        "activation_checkpointing": not args.no_checkpointing,
        "variants": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
