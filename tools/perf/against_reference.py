"""Rows against a checkout of the reference code, timed in its own interpreter (``reference.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from models import naflex_inputs, v1_pair, v2_pair
from timing import Row, case_value, measure, measure_grad
from training import stage2_inputs


def reference_cases(args, device, dtype) -> tuple[dict, list[dict]]:
    """The tensors and calls timed on both sides of ``--reference``: the reference API's method names and
    arguments (which fgclip's models accept too), ``"@name"`` standing for a tensor."""
    torch.manual_seed(1)
    tensors, cases = {}, []

    def case(name, family, what, shape, method, grad=False, ours_method=None, **kwargs):
        cases.append(
            {
                "name": name,
                "family": family,
                "what": what,
                "shape": shape,
                "reference_method": method,
                "ours_method": ours_method or method,
                "grad": grad,
                "kwargs": kwargs,
            }
        )

    for b in args.batches:
        tensors[f"pixels{b}"] = torch.randn(b, 3, 224, 224, dtype=dtype)
        case(
            f"v1-image-{b}",
            "fgclip",
            "FG-CLIP v1 image features",
            f"B={b} 224px",
            "get_image_features",
            pixel_values=f"@pixels{b}",
        )
        for length, short in ((77, True), (248, False)):
            ids = torch.randint(0, 49000, (b, length))
            ids[:, -1] = 49407
            tensors[f"ids{length}_{b}"] = ids
            case(
                f"v1-text{length}-{b}",
                "fgclip",
                "FG-CLIP v1 text features",
                f"B={b} L={length}",
                "get_text_features",
                input_ids=f"@ids{length}_{b}",
                walk_short_pos=short,
            )
        tensors[f"naflex{b}"], tensors[f"mask{b}"], tensors[f"shapes{b}"] = naflex_inputs(b, 256, 16, "cpu", dtype)
        case(
            f"v2-image-{b}",
            "fgclip2",
            "FG-CLIP 2 image features",
            f"B={b} 256 patches",
            "get_image_features",
            pixel_values=f"@naflex{b}",
            pixel_attention_mask=f"@mask{b}",
            spatial_shapes=f"@shapes{b}",
        )
        for length, walk in ((64, "short"), (196, "long")):
            tensors[f"v2ids{length}_{b}"] = torch.randint(2, 31000, (b, length))
            case(
                f"v2-text{length}-{b}",
                "fgclip2",
                "FG-CLIP 2 text features",
                f"B={b} L={length}",
                "get_text_features",
                input_ids=f"@v2ids{length}_{b}",
                walk_type=walk,
            )
    tensors["boxes8"] = torch.rand(8, 2).mul(7).repeat(1, 2) + torch.tensor([0, 0, 4.0, 4.0])  # 14 x 14 grid units
    case(
        "v1-roi-8",
        "fgclip",
        "FG-CLIP v1 region features",
        "1 image, 8 boxes",
        "get_image_box_roi_features",
        pixel_values="@pixels1" if 1 in args.batches else f"@pixels{args.batches[0]}",
        box_info=["@boxes8"],
    )
    step = stage2_inputs(args.step_batch, 4, 2, 10, "cpu", dtype)
    step["box_infos"] = step["box_infos"].reshape(args.step_batch, 4, 4)
    tensors |= {f"step_{k}": v for k, v in step.items()}
    case(
        "v1-step",
        "fgclip",
        "FG-CLIP v1 stage-2 step (fwd+bwd)",
        f"B={args.step_batch}, boxes and 10 negatives",
        "forward",
        grad=True,
        ours_method="stage2_loss",
        add_box_loss=True,
        use_hard_neg=True,
        **{k: f"@step_{k}" for k in step},
    )
    return tensors, cases


def reference_rows(args, device, dtype) -> list[Row]:
    """fgclip against a checkout of the reference implementation (``--reference``), timed by ``reference.py``
    under ``--reference-python`` on the weights saved here and the same inputs."""
    import socket
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="fgclip-perf-reference-"))
    pairs = {"fgclip": v1_pair, "fgclip2": v2_pair}
    ours = {family: pairs[family](args.tiny, device, dtype)[0] for family in args.reference_families}
    for family, model in ours.items():
        model.save_pretrained(work / family)  # the released checkpoint layout, which the reference loads
    tensors, cases = reference_cases(args, device, dtype)
    cases = [c for c in cases if c["family"] in args.reference_families]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.save(tensors, work / "cases.pt")
    spec = {"cases": cases, "device": device, "dtype": args.dtype, "port": port}
    spec |= {"min_run_time": args.min_run_time, "step_repeats": args.step_repeats}
    (work / "cases.json").write_text(json.dumps(spec))
    command = [args.reference_python, str(Path(__file__).with_name("reference.py")), str(args.reference), str(work)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the reference run failed ({' '.join(command)}):\n{done.stderr[-4000:]}")
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith("reference ")), file=sys.stderr)
    reference = json.loads((work / "reference.json").read_text())

    rows = []
    for c in cases:
        model = ours[c["family"]]
        kwargs = {k: case_value(v, tensors, device) for k, v in c["kwargs"].items()}
        method = getattr(model, c["ours_method"])
        if c["grad"]:
            model.train()

            def step(method=method, kwargs=kwargs, model=model):
                method(**kwargs).loss.backward()
                model.zero_grad(set_to_none=True)

            o = measure_grad(step, args.step_repeats)
            model.eval()
        else:
            o = measure(lambda method=method, kwargs=kwargs: method(**kwargs), args.min_run_time)
        rows.append(Row(c["what"], c["shape"], *o, f"reference code ({args.reference.name})", reference[c["name"]]))
    return rows
