"""Training rows: one stage-2 step, its activation memory, and the reference's call structure re-enacted."""

from __future__ import annotations

import torch
from models import clip_configs, naflex_inputs, v2_pair
from timing import Row, measure, measure_grad, measure_grad_pair

from fgclip_data import Stage2Batch


def stage2_rows(args, device, dtype) -> tuple[list[Row], list[dict]]:
    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    rows, memory = [], []
    batch, boxes, hard, negatives = args.step_batch, 4, 2, 10
    torch.manual_seed(0)
    for checkpointing in (False, True):
        model = FGCLIPModel(FGCLIPConfig(**clip_configs(args.tiny))).to(device, dtype).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        inputs = Stage2Batch(**stage2_inputs(batch, boxes, hard, negatives, device, dtype))

        def step(model=model, inputs=inputs):
            out = model.compute_loss(inputs)
            out.loss.backward()
            model.zero_grad(set_to_none=True)

        saved = activation_bytes(lambda model=model, inputs=inputs: model.compute_loss(inputs).loss)
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
        "pixel_values": torch.randn(batch, 3, 224, 224, device=device, dtype=dtype),
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


def structure_rows(args, device, dtype) -> list[Row]:
    """fgclip against the reference's call structure, re-enacted on fgclip's own modules and weights (not the
    reference code): what the batched heads and the single short-text tower call are worth on their own."""
    from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel

    rows: list[Row] = []
    batch = args.step_batch
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig(**clip_configs(args.tiny))).to(device, dtype).train()
    inputs = Stage2Batch(**stage2_inputs(batch, 4, 2, 10, device, dtype))

    def step():
        model.compute_loss(inputs).loss.backward()
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
