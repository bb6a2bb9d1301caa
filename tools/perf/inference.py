"""Inference rows: image / text / region features against transformers' CLIPModel and Siglip2Model."""

from __future__ import annotations

import sys

import torch
from models import embedding_inputs, naflex_inputs, v1_pair, v2_pair
from timing import Row, measure, measure_interleaved


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
                pixels, mask, shapes, boxes=boxes
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


def backend_rows(args, device, dtype) -> list[Row]:
    """Image and text embeddings through each backend of ``fgclip_model.backends`` against transformers' eager
    model of the same configuration and weights, with the embeddings' agreement (min cosine to transformers')."""
    import gc
    import shutil
    import tempfile

    import torch.nn.functional as F

    from fgclip_model.backends import BACKENDS, GRAPH_BACKENDS, with_backend

    rows: list[Row] = []
    for family, pair in (("FG-CLIP v1", v1_pair), ("FG-CLIP 2", v2_pair)):
        ours, peer = pair(args.tiny, device, dtype)
        peer_name = "transformers CLIPModel" if family == "FG-CLIP v1" else "transformers Siglip2Model"
        onnx_dir = tempfile.mkdtemp(prefix="fgclip-perf-onnx-")  # one export for the graph backends, deleted below
        models = {
            name: with_backend(ours, name, **({"export_dir": onnx_dir} if name in GRAPH_BACKENDS else {}))
            for name in BACKENDS
            if name in args.backends
        }
        for batch in args.batches:
            for kind, inputs, shape in embedding_inputs(family, batch, device, dtype):
                method = f"get_{kind}_features"
                fns = {"peer": lambda inputs=inputs, method=method, peer=peer: getattr(peer, method)(**inputs)}
                for name, model in models.items():
                    fns[name] = lambda inputs=inputs, method=method, model=model: getattr(model, method)(**inputs)
                with torch.inference_mode():
                    outputs = {name: getattr(fn(), "pooler_output", None) for name, fn in fns.items()}
                    outputs = {name: out if out is not None else fns[name]() for name, out in outputs.items()}
                timed = measure_interleaved(fns, args.min_run_time * len(fns))
                for name in models:
                    cosine = F.cosine_similarity(outputs[name].float(), outputs["peer"].float(), dim=-1).min().item()
                    row = Row(f"{family} {kind} embeddings [{name}]", shape, *timed[name], peer_name, timed["peer"][0])
                    row.cosine = cosine
                    rows.append(row)
                    print(f"backend {row.what} {shape}: {row.ours_ms:.1f} ms ({row.ratio:.2f}x)", file=sys.stderr)
        del models, fns, outputs
        gc.collect()
        torch._dynamo.reset()  # compiled graphs hold their frozen weights
        shutil.rmtree(onnx_dir, ignore_errors=True)
    return rows
