"""Performance harness: fgclip against transformers' CLIPModel / Siglip2Model with identical configs and weights,
region features against the reference evaluation's one-encode-per-box protocol, the stage-2 training step with
its activation memory (with and without activation checkpointing), the reference's call structure re-enacted
on fgclip's own modules (per-sample pooling-head and text-head loops, one text-tower call per text kind), and
the shard loader's throughput.

One process, torch.utils.benchmark timers (warm-up, then repeated blocks; median and interquartile range):

    uv run python tools/perf/run.py                 # ViT-B/16-sized towers, batch 1 and 8 (CPU: ~10 min)
    uv run python tools/perf/run.py --batches 1,8,64 --device cuda --dtype bfloat16
    uv run python tools/perf/run.py --tiny          # small towers: a smoke run of every row (seconds)

Writes a Markdown table (stdout and ``--out``) and JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils import benchmark


@dataclass
class Row:
    what: str
    shape: str
    ours_ms: float
    ours_iqr_ms: float
    peer: str = ""
    peer_ms: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.peer_ms is None else self.peer_ms / self.ours_ms


def measure(fn, min_run_time: float) -> tuple[float, float]:
    """(median, IQR) in ms of ``fn()`` after one warm-up call."""
    with torch.inference_mode():
        fn()
        m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
            min_run_time=min_run_time
        )
    return m.median * 1e3, m.iqr * 1e3


def measure_grad(fn, repeats: int) -> tuple[float, float]:
    """(median, IQR) in ms of a training step (autograd on: no inference mode)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    t = torch.tensor(times)
    return t.median().item(), (t.quantile(0.75) - t.quantile(0.25)).item()


def measure_grad_pair(fn_a, fn_b, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(median, IQR) in ms of two training steps timed alternately (a, b, a, b, ...), so that drift of a
    shared machine over the minutes a CPU step takes falls on both sides alike."""
    fn_a(), fn_b()
    times: dict = {fn_a: [], fn_b: []}
    for _ in range(repeats):
        for fn in (fn_a, fn_b):
            start = time.perf_counter()
            fn()
            times[fn].append((time.perf_counter() - start) * 1e3)
    out = []
    for fn in (fn_a, fn_b):
        t = torch.tensor(times[fn])
        out.append((t.median().item(), (t.quantile(0.75) - t.quantile(0.25)).item()))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- models


def clip_configs(tiny: bool) -> dict:
    if tiny:
        return {
            "text_config": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "vocab_size": 49408,
                "max_position_embeddings": 77,
            },
            "vision_config": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 224,
                "patch_size": 16,
            },
            "projection_dim": 64,
        }
    return {  # OpenAI ViT-B/16
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
        },
        "vision_config": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 16,
        },
        "projection_dim": 512,
    }


def siglip2_config(tiny: bool):
    from transformers import Siglip2Config

    width = (
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
        if tiny
        else {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    )
    return Siglip2Config(
        text_config={**width, "vocab_size": 32000, "max_position_embeddings": 64},
        vision_config={**width, "num_patches": 256, "patch_size": 16},
    )


def v1_pair(tiny: bool, device, dtype):
    from transformers import CLIPConfig, CLIPModel

    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    torch.manual_seed(0)
    ours = FGCLIPModel(FGCLIPConfig(**clip_configs(tiny)))
    peer = CLIPModel(CLIPConfig(**clip_configs(tiny)))
    missing, _ = peer.load_state_dict(ours.state_dict(), strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing  # the same weights in both
    return ours.to(device, dtype).eval(), peer.to(device, dtype).eval()


def v2_pair(tiny: bool, device, dtype):
    from transformers import Siglip2Model

    from fgclip_model.fgclip2 import FGCLIP2Model

    torch.manual_seed(0)
    peer = Siglip2Model(siglip2_config(tiny)).eval()
    ours = FGCLIP2Model.from_siglip2(peer)  # same trunk weights; heads copied
    return ours.to(device, dtype).eval(), peer.to(device, dtype).eval()


def naflex_inputs(batch: int, side: int, patch: int, device, dtype):
    grid = side // patch
    n = grid * grid
    pixels = torch.randn(batch, n, 3 * patch * patch, device=device, dtype=dtype)
    mask = torch.ones(batch, n, dtype=torch.long, device=device)
    shapes = torch.tensor([[grid, grid]] * batch, device=device)
    return pixels, mask, shapes


# ------------------------------------------------------------------------------------------------ rows


def inference_rows(args, device, dtype) -> list[Row]:
    rows: list[Row] = []
    ours, peer = v1_pair(args.tiny, device, dtype)
    for batch in args.batches:
        pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        o = measure(lambda: ours.get_image_features(pixels), args.min_run_time)  # noqa: B023 (called at once, inside the iteration)
        p = measure(lambda: peer.get_image_features(pixel_values=pixels), args.min_run_time)  # noqa: B023 (called at once, inside the iteration)
        rows.append(Row("FG-CLIP v1 image features", f"B={batch} 224px", *o, "transformers CLIPModel", p[0]))
        for length in (77, 248):
            ids = torch.randint(0, 49000, (batch, length), device=device)
            ids[:, -1] = 49407
            walk = "short" if length == 77 else "long"
            o = measure(lambda ids=ids, walk=walk: ours.get_text_features(ids, walk_type=walk), args.min_run_time)
            if length == 77:
                p = measure(lambda ids=ids: peer.get_text_features(input_ids=ids), args.min_run_time)
                rows.append(Row("FG-CLIP v1 text features", f"B={batch} L=77", *o, "transformers CLIPModel", p[0]))
            else:
                rows.append(Row("FG-CLIP v1 text features", f"B={batch} L=248", *o, note="CLIPModel has no 248 table"))
        roi_rows(rows, ours, pixels, batch, args)
    ours, peer = v2_pair(args.tiny, device, dtype)
    for batch in args.batches:
        pixels, mask, shapes = naflex_inputs(batch, 256, 16, device, dtype)
        o = measure(lambda: ours.get_image_features(pixels, mask, shapes), args.min_run_time)  # noqa: B023 (called at once, inside the iteration)
        p = measure(
            lambda: peer.get_image_features(pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes),  # noqa: B023 (called at once, inside the iteration)
            args.min_run_time,
        )
        rows.append(Row("FG-CLIP 2 image features", f"B={batch} 256 patches", *o, "transformers Siglip2Model", p[0]))
        for length, walk in ((64, "short"), (196, "long")):
            ids = torch.randint(2, 31000, (batch, length), device=device)
            o = measure(lambda ids=ids, walk=walk: ours.get_text_features(ids, walk_type=walk), args.min_run_time)
            if length == 64:
                p = measure(lambda ids=ids: peer.get_text_features(input_ids=ids), args.min_run_time)
                rows.append(Row("FG-CLIP 2 text features", f"B={batch} L=64", *o, "transformers Siglip2Model", p[0]))
            else:
                rows.append(Row("FG-CLIP 2 text features", f"B={batch} L=196", *o, note="Siglip2Model: 64 tokens only"))
        boxes = [torch.tensor([[0.1, 0.1, 0.6, 0.7]] * 8)] * batch
        o = measure(
            lambda pixels=pixels, mask=mask, shapes=shapes, boxes=boxes: ours.get_image_region_features(
                pixels, mask, shapes, image_sizes=[(1, 1)] * len(boxes), region_infos=boxes
            ),
            args.min_run_time,
        )
        rows.append(Row("FG-CLIP 2 region features", f"B={batch} 8 boxes/img", *o))
    return rows


def roi_rows(rows: list[Row], model, pixels, batch: int, args) -> None:
    """All boxes from one encode vs the reference eval's protocol: the whole image re-encoded for every box."""
    if batch != 1:
        return
    for n in (1, 8, 32):
        boxes = [torch.rand(n, 2).mul(0.5).repeat(1, 2) + torch.tensor([0, 0, 0.3, 0.3])]
        o = measure(lambda boxes=boxes: model.get_image_region_features(pixels, boxes), args.min_run_time)
        per_box = [[b[None]] for b in boxes[0]]
        p = measure(
            lambda per_box=per_box: [model.get_image_region_features(pixels, b) for b in per_box], args.min_run_time
        )
        rows.append(
            Row("FG-CLIP v1 region features", f"1 image, {n} boxes", *o, "one encode per box (ref. eval)", p[0])
        )


def stage2_rows(args, device, dtype) -> tuple[list[Row], list[dict]]:
    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    rows, memory = [], []
    batch, boxes, hard, negatives = args.step_batch, 4, 2, 10
    torch.manual_seed(0)
    for checkpointing in (False, True):
        model = FGCLIPModel(FGCLIPConfig(**clip_configs(args.tiny))).to(device, dtype).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        inputs = stage2_inputs(batch, boxes, hard, negatives, device, dtype)

        def step(model=model, inputs=inputs):
            out = model.stage2_loss(**inputs, add_box_loss=True, use_hard_neg=True)
            out.loss.backward()
            model.zero_grad(set_to_none=True)

        saved = activation_bytes(
            lambda model=model, inputs=inputs: model.stage2_loss(**inputs, add_box_loss=True, use_hard_neg=True).loss
        )
        o = measure_grad(step, args.step_repeats)
        label = "with activation checkpointing" if checkpointing else "no checkpointing"
        texts = batch * (2 + boxes + hard * (1 + negatives))
        rows.append(Row("FG-CLIP v1 stage-2 step (fwd+bwd)", f"B={batch}, {texts} texts, {label}", *o))
        memory.append(
            {
                "checkpointing": checkpointing,
                "batch": batch,
                "saved_activations_MiB": saved / 2**20,
                "parameters_MiB": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
            }
        )
    return rows, memory


def stage2_inputs(batch: int, boxes: int, hard: int, negatives: int, device, dtype) -> dict:
    inputs = {
        "image": torch.randn(batch, 3, 224, 224, device=device, dtype=dtype),
        "text_short": torch.randint(0, 49000, (batch, 77), device=device),
        "text_long": torch.randint(0, 49000, (batch, 248), device=device),
        "box_infos": torch.tensor([[0.1, 0.1, 0.5, 0.5]] * (batch * boxes), device=device),
        "box_texts": torch.randint(0, 49000, (batch * boxes, 77), device=device),
        "box_nums": torch.full((batch,), boxes, device=device),
        "hard_infos": torch.tensor([[0.2, 0.2, 0.6, 0.6]] * (batch * boxes), device=device).reshape(batch, boxes, 4),
        "hard_texts": torch.randint(0, 49000, (batch * hard * (1 + negatives), 77), device=device),
        "hard_nums": torch.full((batch,), hard, device=device),
    }
    for key in ("text_short", "text_long", "box_texts", "hard_texts"):
        inputs[key][:, -1] = 49407
    return inputs


def structure_rows(args, device, dtype) -> list[Row]:
    """fgclip against the reference's call structure, re-enacted on fgclip's own modules and weights (not the
    reference code): what the batched heads and the single short-text tower call are worth on their own."""
    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    rows: list[Row] = []
    batch = args.step_batch
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig(**clip_configs(args.tiny))).to(device, dtype).train()
    inputs = stage2_inputs(batch, 4, 2, 10, device, dtype)

    def step():
        model.stage2_loss(**inputs, add_box_loss=True, use_hard_neg=True).loss.backward()
        model.zero_grad(set_to_none=True)

    one_call = model._short_tower

    def per_kind_step():
        model._short_tower = lambda pieces: torch.cat([one_call([p]) for p in pieces])  # short, box, hard: 3 calls
        try:
            step()
        finally:
            del model._short_tower

    ours, theirs = measure_grad_pair(step, per_kind_step, args.step_repeats)
    texts = batch * (1 + 4 + 2 * 11)
    rows.append(
        Row(
            "FG-CLIP v1 stage-2 step (fwd+bwd)",
            f"B={batch}, {texts} short-walk texts",
            *ours,
            "one text-tower call per text kind (ref. structure)",
            theirs[0],
        )
    )

    ours2, _ = v2_pair(args.tiny, device, dtype)
    for b in args.batches:
        pixels, mask, shapes = naflex_inputs(b, 256, 16, device, dtype)
        o = measure(lambda: ours2.get_image_features(pixels, mask, shapes), args.min_run_time)  # noqa: B023 (called at once, inside the iteration)
        head = ours2.vision_model.head
        head.forward = lambda tokens, mask=None, head=head: per_sample_pooling(head, tokens, mask)
        p = measure(lambda: ours2.get_image_features(pixels, mask, shapes), args.min_run_time)  # noqa: B023 (called at once, inside the iteration)
        del head.forward
        rows.append(
            Row("FG-CLIP 2 image features", f"B={b} 256 patches", *o, "per-sample pooling head (ref. structure)", p[0])
        )
        ids = torch.randint(2, 31000, (b, 64), device=device)
        o = measure(lambda ids=ids: ours2.get_text_features(ids, walk_type="short"), args.min_run_time)
        linear = ours2.text_model.head
        linear.forward = lambda x, linear=linear: torch.cat(
            [torch.nn.functional.linear(r[None], linear.weight, linear.bias) for r in x]
        )
        p = measure(lambda ids=ids: ours2.get_text_features(ids, walk_type="short"), args.min_run_time)
        del linear.forward
        rows.append(Row("FG-CLIP 2 text features", f"B={b} L=64", *o, "per-row short-text head (ref. structure)", p[0]))
    return rows


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


def case_value(value, tensors: dict, device):
    if isinstance(value, str) and value.startswith("@"):
        return tensors[value[1:]].to(device)
    if isinstance(value, list):
        return [case_value(v, tensors, device) for v in value]
    return value


def per_sample_pooling(head, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The reference's pooling head: one ``nn.MultiheadAttention`` call per image, with an additive key mask."""
    outs = []
    for i in range(tokens.shape[0]):
        additive = torch.zeros(1, tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
        if mask is not None:
            additive[0, mask[i] == 0] = torch.finfo(tokens.dtype).min
        attn_mask = additive[None].expand(head.num_heads, 1, -1)
        a = head.attention(head.probe, tokens[i : i + 1], tokens[i : i + 1], attn_mask=attn_mask)[0]
        outs.append(head.refine(a)[:, 0])
    return torch.cat(outs)


def activation_bytes(forward) -> int:
    """Bytes of the tensors autograd saves for backward during ``forward()`` (activation memory of a step)."""
    total = 0
    seen: set[int] = set()

    def pack(t):
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen and not isinstance(t, torch.nn.Parameter):
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    del loss
    return total


def loader_rows(args) -> list[dict]:
    """Decode + resize + tokenise throughput of the shard stream on one core (FG-Shapes JPEGs)."""
    import tempfile

    from transformers import CLIPImageProcessor

    from fgclip_data import FGCLIPCollator, FineHARDShards, ImageResize
    from fgclip_data.fgshapes.generate import GenerateOptions, generate
    from fgclip_data.shards import write_shards
    from fgclip_data.tokenizer import build_word_tokenizer

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shapes"
        generate(
            folder,
            GenerateOptions(n=args.loader_samples, seed=0, workers=1, min_size=320, max_size=640, val_fraction=0.0),
        )
        write_shards(folder / "jsonfiles" / "train", folder / "grit-12m", Path(tmp) / "shards", shard_size=200)
        dataset = FineHARDShards(Path(tmp) / "shards", resize=ImageResize(square=224))
        from fgclip_data import read_records

        texts = [
            t for r in read_records(folder / "jsonfiles" / "train") for t in (r.record.caption, r.record.short_caption)
        ]
        tokenizer = build_word_tokenizer(texts, "fgclip")
        image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224)
        collate = FGCLIPCollator(tokenizer, image_processor, max_boxes=4, add_box_loss=True, use_hard_neg=True)
        torch.set_num_threads(1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=0, collate_fn=collate)
        start = time.perf_counter()
        n = sum(batch["image"].shape[0] for batch in loader)
        seconds = time.perf_counter() - start
        out.append(
            {
                "what": "shard stream -> FG-CLIP batch (decode, 224 squash, boxes, tokenise)",
                "samples": n,
                "seconds": seconds,
                "samples_per_s_per_core": n / seconds,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------- report


def markdown(rows: list[Row]) -> str:
    lines = [
        "| path | shape | fgclip median (ms) | IQR | compared with | its median (ms) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = f"{r.peer_ms:.1f}" if r.peer_ms is not None else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        lines.append(
            f"| {r.what} | {r.shape} | {r.ours_ms:.1f} | {r.ours_iqr_ms:.1f} | {r.peer or r.note or '—'} "
            f"| {peer} | {ratio} |"
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
    parser.add_argument("--skip", default="", help="comma list of parts to skip: inference,stage2,structure,loader")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table (and .json) here")
    parser.add_argument(
        "--reference", type=Path, default=None, help="a checkout of the reference repository (360CVGroup/FG-CLIP)"
    )
    parser.add_argument(
        "--reference-python", default=sys.executable, help="the interpreter with the reference's requirements"
    )
    parser.add_argument(
        "--reference-families",
        default="fgclip,fgclip2",
        help="which reference models to time (v1 and FG-CLIP 2 need different transformers: one run each)",
    )
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.reference_families = set(args.reference_families.split(","))
    if args.reference_families - {"fgclip", "fgclip2"}:
        parser.error(f"--reference-families: unknown {sorted(args.reference_families - {'fgclip', 'fgclip2'})}")
    skip = set(filter(None, args.skip.split(",")))
    dtype = getattr(torch, args.dtype)
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    if args.device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name()}"
    print(f"machine: {machine}; device {args.device}; dtype {args.dtype}", file=sys.stderr)
    rows: list[Row] = []
    memory: list[dict] = []
    loader: list[dict] = []
    if "inference" not in skip:
        rows += inference_rows(args, args.device, dtype)
    if "stage2" not in skip:
        step_rows, memory = stage2_rows(args, args.device, dtype)
        rows += step_rows
    if "structure" not in skip:
        rows += structure_rows(args, args.device, dtype)
    if args.reference is not None:
        rows += reference_rows(args, args.device, dtype)
    if "loader" not in skip:
        loader = loader_rows(args)
    table = markdown(rows)
    extra = "\n".join(
        [f"\nactivation memory of one stage-2 step: {json.dumps(memory)}" if memory else ""]
        + [f"loader: {json.dumps(x)}" for x in loader]
    )
    print(f"machine: {machine}\n\n{table}\n{extra}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"machine: {machine}\n\n{table}\n{extra}\n")
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
                    "memory": memory,
                    "loader": loader,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
