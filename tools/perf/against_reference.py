"""Rows against the reference code itself: fgclip and a checkout of the reference, each in a long-lived worker
process (``worker.py``; the reference under its own interpreter), timed interleaved case by case.

For every case both workers first run it once (warm-up) and save their output, which must agree (features to
``--reference-atol``, the step's loss likewise); then the two sides are timed in alternating rounds — ours then
the reference's, then the reference's then ours, ... — so that drift of a shared machine falls on both alike.
Where the reference cannot run at all on the harness's device, a copy of the checkout in the temporary folder
is patched (``PATCHES``; each applied patch is printed and recorded in the JSON). The temporary folder (weights,
inputs, outputs, the patched copy) is deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from models import naflex_inputs, v1_pair, v2_pair
from timing import Row, median_iqr
from training import stage2_inputs
from worker import REPLY

# (file in the checkout, text, replacement, why): what the reference needs to run on a CPU in float32
PATCHES = {
    "fgclip": [
        (
            "fgclip/model/clip_strc/fgclip.py",
            "x_rois.type(torch.bfloat16)",
            "x_rois.type(feature_map.dtype)",
            "the training forward casts RoI features to bf16 on every device; against fp32 text features that "
            "fails on the CPU (the cast now keeps the feature map's dtype)",
        )
    ],
    "fgclip2": [
        (
            "fgclip2/model/strcs/fgclip2.py",
            "x_rois.type(torch.bfloat16)",
            "x_rois.type(feature_map.dtype)",
            "the same bf16 cast of RoI features in the FG-CLIP 2 training forward",
        ),
        (
            "fgclip2/model/strcs/fgclip2.py",
            "labels = 2 * eyevalue.bfloat16() + labels",
            "labels = 2 * eyevalue.to(labels.dtype) + labels",
            "the sigmoid loss's labels are built in bf16 and added to fp32 labels (a dtype mismatch on the CPU)",
        ),
        (
            "fgclip2/model/strcs/fgclip2.py",
            "        except:\n            pass\n",
            "        except Exception:\n            raise\n",
            "the regional and hard-negative losses sit in a bare `try: ... except: pass`, which returns the global "
            "loss alone whenever they fail; the harness lets such a failure surface instead",
        ),
    ],
}
NAMES = {"fgclip": "FG-CLIP v1", "fgclip2": "FG-CLIP 2"}


@dataclass
class Reference:
    """One family's reference: its checkout and the interpreter with the transformers it needs."""

    family: str
    checkout: Path
    python: str


def parse_reference(text: str) -> Reference:
    """``FAMILY=CHECKOUT[,PYTHON]`` (e.g. ``fgclip=../FG-CLIP-v1.0,../ref-v1/bin/python``)."""
    family, _, rest = text.partition("=")
    if family not in PATCHES or not rest:
        raise ValueError(f"--reference {text!r}: expected FAMILY=CHECKOUT[,PYTHON] with FAMILY in {sorted(PATCHES)}")
    checkout, _, python = rest.partition(",")
    return Reference(family, Path(checkout), python or sys.executable)


def reference_cases(args, dtype) -> tuple[dict, list[dict]]:
    """Tensors and calls timed on both sides: each side's method and arguments (``"@name"`` stands for a tensor)."""
    torch.manual_seed(1)
    tensors, cases = {}, []

    def case(name, family, what, shape, method, grad=False, ours=None, ours_kwargs=None, **kwargs):
        cases.append(
            {
                "name": name,
                "family": family,
                "what": what,
                "shape": shape,
                "reference_method": method,
                "ours_method": ours or method,
                "reference_kwargs": kwargs,
                "ours_kwargs": kwargs if ours_kwargs is None else ours_kwargs,
                "grad": grad,
            }
        )

    first = args.batches[0]
    for b in args.batches:
        tensors[f"pixels{b}"] = torch.randn(b, 3, 224, 224, dtype=dtype)
        case(f"v1-image-{b}", "fgclip", "FG-CLIP v1 image features", f"B={b} 224px", "get_image_features",
             pixel_values=f"@pixels{b}")  # fmt: skip
        for length, short in ((77, True), (248, False)):
            ids = torch.randint(0, 49000, (b, length))
            ids[:, -1] = 49407
            tensors[f"ids{length}_{b}"] = ids
            case(f"v1-text{length}-{b}", "fgclip", "FG-CLIP v1 text features", f"B={b} L={length}",
                 "get_text_features", input_ids=f"@ids{length}_{b}", walk_short_pos=short)  # fmt: skip
        tensors[f"naflex{b}"], tensors[f"mask{b}"], tensors[f"shapes{b}"] = naflex_inputs(b, 256, 16, "cpu", dtype)
        naflex = {"pixel_values": f"@naflex{b}", "pixel_attention_mask": f"@mask{b}", "spatial_shapes": f"@shapes{b}"}
        case(f"v2-image-{b}", "fgclip2", "FG-CLIP 2 image features", f"B={b} 256 patches", "get_image_features",
             **naflex)  # fmt: skip
        for length, walk in ((64, "short"), (196, "long")):
            tensors[f"v2ids{length}_{b}"] = torch.randint(2, 31000, (b, length))
            case(f"v2-text{length}-{b}", "fgclip2", "FG-CLIP 2 text features", f"B={b} L={length}",
                 "get_text_features", input_ids=f"@v2ids{length}_{b}", walk_type=walk)  # fmt: skip
    # dense and region features of one batch: the first batch size
    case(f"v1-dense-{first}", "fgclip", "FG-CLIP v1 dense features", f"B={first} 224px", "get_image_dense_features",
         pixel_values=f"@pixels{first}")  # fmt: skip
    naflex = {"pixel_values": f"@naflex{first}", "pixel_attention_mask": f"@mask{first}"}
    naflex["spatial_shapes"] = f"@shapes{first}"
    case(f"v2-dense-{first}", "fgclip2", "FG-CLIP 2 dense features", f"B={first} 256 patches",
         "get_image_features", ours="get_image_dense_features", ours_kwargs=naflex, need_densefeature=True,
         **naflex)  # fmt: skip
    boxes = torch.rand(first, 8, 2).mul(0.5)
    boxes = torch.cat([boxes, boxes + 0.3 + torch.rand(first, 8, 2).mul(0.2)], dim=-1)  # normalised xyxy
    tensors |= {f"boxes_{i}": boxes[i] for i in range(first)}
    tensors |= {f"grid_boxes_{i}": boxes[i] * 14 for i in range(first)}  # v1 API: boxes in 14 x 14 grid units
    case(f"v1-roi-{first}", "fgclip", "FG-CLIP v1 region features", f"B={first}, 8 boxes/img",
         "get_image_box_roi_features", pixel_values=f"@pixels{first}",
         box_info=[f"@grid_boxes_{i}" for i in range(first)])  # fmt: skip
    case(f"v2-roi-{first}", "fgclip2", "FG-CLIP 2 region features", f"B={first}, 8 boxes/img",
         "get_image_box_roi_features", box_info=[f"@grid16_{i}" for i in range(first)], **naflex,
         ours_kwargs={**naflex, "box_info": [f"@grid16_{i}" for i in range(first)]})  # fmt: skip
    # FG-CLIP 2's eval API: [K, 5] rows (0, x1, y1, x2, y2) in the image's 16 x 16 grid units
    tensors |= {f"grid16_{i}": torch.cat([torch.zeros(8, 1), boxes[i] * 16], dim=-1) for i in range(first)}

    b = args.step_batch
    step = stage2_inputs(b, 4, 2, 10, "cpu", dtype)
    step["box_infos"] = step["box_infos"].reshape(b, 4, 4)
    tensors |= {f"step_{k}": v for k, v in step.items()}
    flags = {"add_box_loss": True, "use_hard_neg": True}
    ours = {k: f"@step_{k}" for k in step}  # compute_loss: the worker makes a Stage2Batch of them
    theirs = {"image" if k == "pixel_values" else k: v for k, v in ours.items()}  # the reference's v1 pixel key
    case("v1-step", "fgclip", "FG-CLIP v1 stage-2 step (fwd+bwd)", f"B={b}, 4 boxes, 2 hard x 11", "forward",
         grad=True, ours="compute_loss", ours_kwargs=ours, **flags, **theirs)  # fmt: skip
    v2 = v2_step_inputs(b, dtype)
    tensors |= {f"v2step_{k}": v for k, v in v2.items()}
    ours = {k: f"@v2step_{k}" for k in v2}
    case("v2-step", "fgclip2", "FG-CLIP 2 stage-2 step (fwd+bwd)", f"B={b}, 4 boxes, 2 hard x 11", "forward",
         grad=True, ours="compute_loss", ours_kwargs=ours, **flags, **ours)  # fmt: skip
    return tensors, cases


def v2_step_inputs(batch: int, dtype) -> dict:
    """An FG-CLIP 2 stage-2 batch in the reference trainer's layout: 256-patch NaFlex images, 64 / 196-token
    texts, 4 box slots per image (normalised xyxy), 2 hard boxes per image with 1 + 10 candidate texts each."""
    pixels, mask, shapes = naflex_inputs(batch, 256, 16, "cpu", dtype)
    corner = torch.rand(batch * 4, 2) * 0.5
    boxes = torch.cat([corner, corner + 0.2 + torch.rand(batch * 4, 2) * 0.3], dim=-1)
    return {
        "pixel_values": pixels,
        "pixel_attention_mask": mask.int(),
        "spatial_shapes": shapes,
        "text_short": torch.randint(2, 31000, (batch, 64)),
        "text_long": torch.randint(2, 31000, (batch, 196)),
        "box_infos": boxes,
        "box_texts": torch.randint(2, 31000, (batch * 4, 64)),
        "box_nums": torch.full((batch,), 4),
        "hard_infos": boxes.clone(),
        "hard_texts": torch.randint(2, 31000, (batch * 2 * 11, 64)),
        "hard_nums": torch.full((batch,), 2),
    }


class Worker:
    """A worker process (``worker.py``) and its JSON-line protocol."""

    def __init__(self, side: str, python: str, work: Path, family: str, checkout: Path | None = None) -> None:
        self.name = checkout.name if checkout else "fgclip"
        command = [python, str(Path(__file__).with_name("worker.py")), side, str(work), family]
        command += [str(checkout)] if checkout else []
        self.side, self.command = side, command
        self.log = open(work / f"worker-{side}-{family}.log", "w+")  # noqa: SIM115 (closed in close())
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self.log}
        self.process = subprocess.Popen(command, text=True, **pipes)
        self.receive()  # ready: the model is loaded

    def receive(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        self.log.seek(0)
        raise RuntimeError(f"the {self.side} worker stopped ({' '.join(self.command)}):\n{self.log.read()[-4000:]}")

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError):
                self.ask(op="quit")
            self.process.wait(timeout=60)
        self.log.close()


def apply_patches(reference: Reference, copy: Path) -> list[str]:
    """Copy the checkout into ``copy`` and apply the family's patches there; returns the applied ones."""
    shutil.copytree(reference.checkout, copy, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    applied = []
    for file, text, replacement, why in PATCHES[reference.family]:
        path = copy / file
        if path.is_file() and text in path.read_text():
            path.write_text(path.read_text().replace(text, replacement))
            applied.append(f"{file}: `{text}` -> `{replacement}` ({why})")
    return applied


def compare(work: Path, name: str) -> dict:
    ours = torch.load(work / f"out-ours-{name}.pt", weights_only=True).float()
    ref = torch.load(work / f"out-reference-{name}.pt", weights_only=True).float()
    if ours.shape != ref.shape:
        raise RuntimeError(f"{name}: output shapes differ (fgclip {tuple(ours.shape)}, reference {tuple(ref.shape)})")
    agree = {"max_abs_diff": float((ours - ref).abs().max())}
    if ours.numel() == 1:  # a step's loss: both values
        agree |= {"fgclip": float(ours), "reference": float(ref)}
    if ours.dim() >= 1 and ours.shape[-1] > 1:
        cos = torch.nn.functional.cosine_similarity(ours.flatten(0, -2), ref.flatten(0, -2), dim=-1)
        agree["min_cosine"] = float(cos.min())
    return agree


def timed_pair(a: Worker, b: Worker, name: str, calls: int, rounds: int, settle: float) -> dict[str, list[float]]:
    """``rounds`` blocks of ``calls`` timed calls per side, alternating which side goes first, with ``settle``
    seconds of quiet before each block (OpenMP threads of the side that just ran spin for a while after their
    last parallel region, which would take cores from the side starting next)."""
    times: dict[str, list[float]] = {a.side: [], b.side: []}
    for r in range(rounds):
        for worker in (a, b) if r % 2 == 0 else (b, a):
            time.sleep(settle)
            times[worker.side] += worker.ask(op="time", case=name, calls=calls)["ms"]
    return times


def time_case(case: dict, ours: Worker, theirs: Worker, work: Path, args) -> tuple[Row, dict]:
    """One case: both sides run it once and must agree, then are timed interleaved."""
    start = {}
    for worker in (ours, theirs):
        t = time.perf_counter()
        worker.ask(op="run", case=case["name"])
        start[worker.side] = time.perf_counter() - t
    agreement = compare(work, case["name"])
    close = agreement["max_abs_diff"] <= args.reference_atol
    if args.ours_backend in ("bf16", "compile"):  # bf16 features: compared by direction
        close = close or agreement.get("min_cosine", 0.0) >= 1 - 1e-3
    if not close:
        raise RuntimeError(f"{case['name']}: fgclip and the reference disagree: {agreement}")
    if case["grad"]:
        calls, rounds = 1, 2 * args.step_repeats
    else:
        rounds = 6
        calls = max(1, round(args.min_run_time / rounds / max(min(start.values()), 1e-3)))
    times = timed_pair(ours, theirs, case["name"], calls, rounds, args.settle)
    mine, peer = median_iqr(times["ours"]), median_iqr(times["reference"])
    what = case["what"] + ("" if args.ours_backend == "eager" else f" [{args.ours_backend}]")
    return Row(what, case["shape"], *mine, f"reference code ({theirs.name})", peer[0]), agreement


def reference_rows(args, device, dtype) -> tuple[list[Row], dict]:
    """fgclip against the reference checkouts of ``--reference`` on the same weights and inputs; returns the rows
    and what was checked (patches applied, output agreement per case)."""
    from tqdm.auto import tqdm

    if device != "cpu":
        raise ValueError("--reference runs on the CPU (the reference's GPU paths need its own launcher)")
    work = Path(tempfile.mkdtemp(prefix="fgclip-perf-reference-"))
    rows: list[Row] = []
    checks: dict = {"patches": {}, "agreement": {}}
    try:
        pairs = {"fgclip": v1_pair, "fgclip2": v2_pair}
        for reference in args.reference:
            pairs[reference.family](args.tiny, "cpu", dtype)[0].save_pretrained(work / reference.family)
        tensors, cases = reference_cases(args, dtype)
        torch.save(tensors, work / "cases.pt")
        ports = {}
        for side in ("ours", "reference"):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports[side] = sock.getsockname()[1]
        if args.ours_backend != "eager":  # the step trains through forward(), which backends leave eager
            cases = [c for c in cases if not c["grad"]]
        spec = {"cases": cases, "threads": torch.get_num_threads(), "ports": ports, "ours_backend": args.ours_backend}
        (work / "cases.json").write_text(json.dumps(spec))
        for reference in args.reference:
            copy = work / f"reference-{reference.family}"
            checks["patches"][reference.family] = applied = apply_patches(reference, copy)
            for patch in applied:
                print(f"reference patched: {patch}", file=sys.stderr)
            family_cases = [c for c in cases if c["family"] == reference.family]
            ours = Worker("ours", sys.executable, work, reference.family)
            theirs = Worker("reference", reference.python, work, reference.family, copy)
            theirs.name = reference.checkout.name  # the checkout's own name, not the temporary copy's
            try:
                progress = tqdm(family_cases, desc=f"against the reference ({NAMES[reference.family]})", unit="case")
                for c in progress:
                    progress.set_postfix_str(c["name"])
                    row, checks["agreement"][c["name"]] = time_case(c, ours, theirs, work, args)
                    rows.append(row)
                    progress.write(f"{c['name']}: fgclip {row.ours_ms:.1f} ms, reference {row.peer_ms:.1f} ms "
                                   f"({row.ratio:.2f}x; outputs {checks['agreement'][c['name']]})")  # fmt: skip
            finally:
                ours.close()
                theirs.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, checks
