"""Performance harness: fgclip against transformers' CLIPModel / Siglip2Model with identical configs and weights,
region features against the reference evaluation's one-encode-per-box protocol, the stage-2 training step with
its activation memory (with and without activation checkpointing), the reference's call structure re-enacted
on fgclip's own modules (per-sample pooling-head and text-head loops, one text-tower call per text kind), and
the shard loader's throughput.

One process, torch.utils.benchmark timers (warm-up, then repeated blocks; median and interquartile range):

    uv run python tools/perf/run.py                 # ViT-B/16-sized towers, batch 1 and 8 (CPU: ~10 min)
    uv run python tools/perf/run.py --batches 1,8,64 --device cuda --dtype bfloat16
    uv run python tools/perf/run.py --tiny          # small towers: a smoke run of every row (seconds)

Writes a Markdown table (stdout and ``--out``) and JSON next to it. The rows come from one module per kind:
``inference`` (features against transformers), ``training`` (the stage-2 step, activation memory, the reference's
call structure), ``against_reference`` (checkouts of the reference code, each run by ``worker.py`` in its own
interpreter) and ``loader`` (shard throughput), over ``models`` (the towers) and ``timing`` (timers, rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from against_reference import parse_reference, reference_rows
from inference import backend_rows, inference_rows
from loader import loader_rows
from timing import Row
from training import stage2_rows, structure_rows

from fgclip_model.backends import BACKENDS
from fgclip_model.machine import cpu_line, cpu_record

# ---------------------------------------------------------------------------------------------- models


# ------------------------------------------------------------------------------------------------ rows


# ----------------------------------------------------------------------------------------------- report


def markdown(rows: list[Row]) -> str:
    lines = [
        "| path | shape | fgclip median (ms) | IQR | compared with | its median (ms) | speed-up | min cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = f"{r.peer_ms:.1f}" if r.peer_ms is not None else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(
            f"| {r.what} | {r.shape} | {r.ours_ms:.1f} | {r.ours_iqr_ms:.1f} | {r.peer or r.note or '—'} "
            f"| {peer} | {ratio} | {'—' if r.cosine is None else f'{r.cosine:.6f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small towers (a smoke run)")
    parser.add_argument("--batches", default="1,8", help="inference batch sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per row")
    parser.add_argument("--step-batch", type=int, default=4, help="stage-2 step batch")
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument("--loader-samples", type=int, default=600)
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: inference,backends,stage2,structure,loader"
    )
    parser.add_argument(
        "--backends",
        default="eager,bf16,compile,onnx,int8",
        help="fgclip_model backends timed by the backends part",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="the float32 ceiling: this CPU's float32 matmul peak over the rate transformers' eager model reaches, "
        "row by row (the most any float32 runtime can gain)",
    )
    parser.add_argument(
        "--mainjob",
        action="store_true",
        help="profile the main job's step (stage2's default FG-Shapes run; generates FG-Shapes on first use)",
    )
    parser.add_argument(
        "--mainjob-override", action="append", default=[], help="stage2 overrides for --mainjob (key=value)"
    )
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="benchmark image throughput on N COCO-sized JPEGs per backend and decoding-worker count",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table (and .json) here")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="FAMILY=CHECKOUT[,PYTHON]",
        help="time fgclip against a reference checkout in its own interpreter, interleaved case by case "
        "(fgclip: the FG-CLIP v1.0 branch with transformers 4.3x; fgclip2: the main branch with a SigLIP 2 era "
        "transformers); repeat for both",
    )
    parser.add_argument(
        "--ours-backend",
        default="eager",
        choices=BACKENDS,
        help="fgclip's feature backend in the --reference comparison (non-eager: the step cases are left out)",
    )
    parser.add_argument(
        "--settle", type=float, default=0.3, help="seconds of quiet before each timed block against the reference"
    )
    parser.add_argument(
        "--reference-atol", type=float, default=1e-3, help="largest output difference accepted against the reference"
    )
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.backends = args.backends.split(",")
    try:
        args.reference = [parse_reference(text) for text in args.reference]
    except ValueError as err:
        parser.error(str(err))
    skip = set(filter(None, args.skip.split(",")))
    dtype = getattr(torch, args.dtype)
    cpu = cpu_record()
    machine = cpu_line(cpu)
    if args.device.startswith("cuda"):
        cpu["gpu"] = torch.cuda.get_device_name()
        machine += f"; GPU: {cpu['gpu']}"
    print(f"{machine}; device {args.device}; dtype {args.dtype}", file=sys.stderr)
    rows: list[Row] = []
    memory: list[dict] = []
    loader: list[dict] = []
    if "inference" not in skip:
        rows += inference_rows(args, args.device, dtype)
    if "backends" not in skip:
        rows += backend_rows(args, args.device, dtype)
    if "stage2" not in skip:
        step_rows, memory = stage2_rows(args, args.device, dtype)
        rows += step_rows
    if "structure" not in skip:
        rows += structure_rows(args, args.device, dtype)
    checks: dict = {}
    if args.reference:
        reference, checks = reference_rows(args, args.device, dtype)
        rows += reference
    if "loader" not in skip:
        loader = loader_rows(args)
    table = markdown(rows)
    profile: dict = {}
    throughput: list[dict] = []
    if args.throughput:
        from throughput import markdown as throughput_markdown
        from throughput import throughput_rows

        throughput = throughput_rows(args.throughput, args.backends, args.tiny)
        table += "\n\nbenchmark image throughput (FG-CLIP 2, COCO-sized JPEGs):\n\n" + throughput_markdown(throughput)
    ceiling: list[dict] = []
    if args.ceiling:
        from ceiling import ceiling_rows
        from ceiling import markdown as ceiling_markdown

        ceiling = ceiling_rows(args.batches, args.min_run_time, args.tiny)
        table += "\n\n" + ceiling_markdown(ceiling)
    if args.mainjob:
        from mainjob import mainjob_profile
        from mainjob import markdown as mainjob_markdown

        profile = mainjob_profile(overrides=args.mainjob_override)
        table += "\n\n" + mainjob_markdown(profile)
    extra = "\n".join(
        [f"\nactivation memory of one stage-2 step: {json.dumps(memory)}" if memory else ""]
        + [f"loader: {json.dumps(x)}" for x in loader]
    )
    print(f"{machine}\n\n{table}\n{extra}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"{machine}\n\n{table}\n{extra}\n")
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "cpu": cpu,
                    "device": args.device,
                    "dtype": args.dtype,
                    "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
                    "memory": memory,
                    "loader": loader,
                    "reference_checks": checks,
                    "mainjob": profile,
                    "throughput": throughput,
                    "ceiling": ceiling,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
