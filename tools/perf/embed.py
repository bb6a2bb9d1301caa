"""``fgclip-model embed`` throughput on this CPU (or ``--device cuda``): images/s of FG-CLIP 2 B/16 and FG-CLIP
v1 B/16 (random weights at the released geometries) for each backend on COCO-sized JPEGs (640 x 480), with the share
of the run spent waiting for decoded images. Writes ``tools/perf/results/cpu-embed.json`` (and ``.md``) with the
CPU it ran on (``cpu.cpu_record``: model, flags, effective instruction set, threads).

    uv run python tools/perf/embed.py [--images 32] [--backends eager bf16 compile onnx] [--models fgclip2 fgclip]

The images are embedded without captions (image tower only, as a folder of JPEGs without sidecars is).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from fgclip_model.machine import cpu_line, cpu_record

RESULTS = Path(__file__).parent / "results"


def build(family: str, folder: Path) -> Path:
    """A B/16 model of ``family`` with random weights, saved under ``folder``: FG-CLIP v1 at OpenAI ViT-B/16's
    geometry (224 px, 77 / 248 text positions), FG-CLIP 2 at SigLIP 2 base / patch 16 NaFlex (the image tower of
    fg-clip2-base; a 32k text vocabulary instead of Gemma's 256k, which the image throughput never touches)."""
    from models import clip_configs, siglip2_config
    from transformers import Siglip2Model

    from fgclip_model import FGCLIP2Model, FGCLIPConfig, FGCLIPModel

    torch.manual_seed(0)
    if family == "fgclip":
        model = FGCLIPModel(FGCLIPConfig(**clip_configs(tiny=False)))
    else:
        model = FGCLIP2Model.from_siglip2(Siglip2Model(siglip2_config(tiny=False)))
    path = folder / family
    model.save_pretrained(path)
    return path


def run(families: list[str], backends: list[str], n: int, batch_size: int, workers: int, device: str) -> list[dict]:
    from throughput import coco_like_jpegs

    from fgclip_model.embed import EmbedConfig, embed
    from fgclip_model.embed.runner import result_json

    rows = []
    with tempfile.TemporaryDirectory(prefix="fgclip-perf-embed-") as tmp:
        tmp = Path(tmp)
        os.environ["FGCLIP_CACHE"] = str(tmp / "cache")  # the ONNX exports: not the user's cache
        (tmp / "images").mkdir()
        files = coco_like_jpegs(tmp / "images", n)
        megabytes = sum(f.stat().st_size for f in files) / n / 1e6
        for family in families:
            model = build(family, tmp)
            for backend in backends:
                out = tmp / f"out-{family}-{backend}"
                config = EmbedConfig(str(model), str(tmp / "images"), str(out), backend=backend, device=device,
                                     batch_size=batch_size, workers=workers, part_size=n, progress=False)  # fmt: skip
                result = embed(config)
                summary = result_json(result)
                row = {
                    "family": family,
                    "backend": backend,
                    "images": result.images,
                    "batch_size": batch_size,
                    "workers": workers,
                    "device": device,
                    "jpeg_MB": round(megabytes, 3),
                    "images_per_second": round(summary["images_per_second"], 3),
                    "steady_images_per_second": round(summary["steady_images_per_second"], 3),
                    "first_batch_seconds": round(result.first_batch_seconds, 2),
                    "wait_share": round(result.wait_share, 4),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                gc.collect()
                torch._dynamo.reset()
    return rows


def markdown(machine: dict, rows: list[dict]) -> str:
    lines = [
        cpu_line(machine),
        "",
        "| model | backend | images | images/s | images/s after the first batch | first batch (s) | waiting |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"fgclip": "FG-CLIP v1 B/16 (224 px)", "fgclip2": "FG-CLIP 2 B/16 (NaFlex, 1024 patches at 640x480)"}
    for r in rows:
        lines.append(
            f"| {names[r['family']]} | {r['backend']} | {r['images']} | {r['images_per_second']:.2f} | "
            f"{r['steady_images_per_second']:.2f} | {r['first_batch_seconds']:.1f} | {100 * r['wait_share']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (onnx runs on the CPU only)")
    parser.add_argument("--backends", nargs="+", default=["eager", "bf16", "compile", "onnx"])
    parser.add_argument("--models", nargs="+", default=["fgclip2", "fgclip"], choices=["fgclip2", "fgclip"])
    parser.add_argument("--out", default=str(RESULTS / "cpu-embed"), help="results path without suffix")
    args = parser.parse_args(argv)
    machine = cpu_record()
    rows = run(args.models, args.backends, args.images, args.batch_size, args.workers, args.device)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"cpu": machine, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(machine, rows))
    print(markdown(machine, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
