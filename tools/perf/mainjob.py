"""The main job's step, profiled: ``stage2`` with no arguments (the FG-Shapes preset), phase by phase.

For a few batches of the real run (the preset's data, collator, model and loss settings) it measures the
collation (image decode and processing, tokenisation), the forward + backward and the optimiser step, how many
short-walk texts a batch holds and how many are distinct, and the top operators of one step under
``torch.profiler``. ``before`` encodes every text row, as the reference does; ``after`` is fgclip's step (each
distinct text encoded once per batch).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import torch
from timing import median_iqr


@contextmanager
def every_row_encoded():
    """The reference's text path: every short-walk row through the tower, repeats included."""
    import fgclip_model.fgclip.modeling as v1
    import fgclip_model.fgclip2.modeling as v2

    saved = v1.encode_unique, v2.encode_unique
    v1.encode_unique = v2.encode_unique = lambda encode, ids: encode(ids)
    try:
        yield
    finally:
        v1.encode_unique, v2.encode_unique = saved


def mainjob_profile(steps: int = 6, overrides: list[str] | None = None) -> dict:
    from fgclip_train.config import load_config
    from fgclip_train.data import build_data, load_tokenizer, read_sources, training_records
    from fgclip_train.families import get_family, loss_switches, loss_weights

    config = load_config(overrides=overrides or [])
    sources, records, val = read_sources(config)
    family = get_family(config.model.family)
    tokenizer = load_tokenizer(config, training_records(sources, records), family.tokenizer_layout)
    torch.manual_seed(0)
    model = family.build_model(config, tokenizer).train()
    data = build_data(
        config, family, sources=sources, records=records, val=val, tokenizer=tokenizer, model_config=model.config
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    weights, switches = loss_weights(config, family), loss_switches(config)

    batches, collate = [], []
    iterator = data.batches.epoch(0, 0)
    for _ in range(steps + 1):
        start = time.perf_counter()
        batch = next(iterator)
        collate.append(time.perf_counter() - start)
        batches.append(batch)
    first = batches[0]
    pieces = [t.reshape(-1, t.shape[-1]) for t in (first.text_short, first.box_texts, first.hard_texts)]
    rows = torch.cat(pieces)
    texts = {"rows": rows.shape[0], "distinct": torch.unique(rows, dim=0).shape[0]}

    def step(batch) -> tuple[float, float]:
        start = time.perf_counter()
        out = model.compute_loss(batch, weights, switches)
        out.loss.backward()
        middle = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return middle - start, time.perf_counter() - middle

    result = {"config": config.preset, "batch_size": config.schedule.batch_size, "texts_per_batch": texts}
    for label, context in (("before", every_row_encoded), ("after", nullcontext)):
        with context():
            step(batches[0])  # warm-up
            times = [step(b) for b in batches[1:]]
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(batches[1])
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        result[label] = {
            "collate_ms": median_iqr([1e3 * t for t in collate[1:]])[0],
            "forward_backward_ms": median_iqr([1e3 * t[0] for t in times])[0],
            "optimizer_ms": median_iqr([1e3 * t[1] for t in times])[0],
            "top_ops": {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in top},
        }
    if config.model.family == "fgclip2":
        result["phases"] = tower_phases(model, batches[1:], switches)
        validator = family.build_validator(config, val, sources, tokenizer, data.collate, data.resize)
        validator(model)  # the first call prepares (and keeps) the validation pixels
        start = time.perf_counter()
        validator(model)
        seconds = time.perf_counter() - start
        steps = config.schedule.max_steps or round(config.schedule.epochs * len(data.batches))
        every = config.runtime.eval_every
        during = (steps - 1) // every if every else 0  # the loop validates at multiples of every before the last step
        count = int(config.runtime.eval_before) + during + int(config.runtime.eval_after)
        result["validation"] = {"seconds": seconds, "count": count, "steps": steps,
                                "per_step_ms": 1e3 * seconds * count / steps}  # fmt: skip
    return result


def tower_phases(model, batches, switches) -> dict[str, float]:
    """Median ms of the towers' forward + backward alone on the step's inputs (FG-CLIP 2): the vision tower on the
    batch's patches, the text tower's short walk on the step's distinct short-walk rows (as ``compute_loss`` encodes
    them) and its long walk on the long captions; the rest of the step (heads, region pooling, losses) is the step's
    forward + backward minus these."""
    from fgclip_model.stage2 import ParsedBatch

    def timed(fn) -> float:
        times = []
        for batch in batches:
            start = time.perf_counter()
            out = fn(batch)
            out.float().sum().backward()
            times.append(1e3 * (time.perf_counter() - start))
            model.zero_grad(set_to_none=True)
        return median_iqr(times)[0]

    def vision(batch):
        shapes = model._shapes(batch.pixel_values, batch.spatial_shapes)
        return model.vision_model(batch.pixel_values, batch.pixel_attention_mask, shapes)

    def short(batch):
        ids = torch.cat(ParsedBatch.parse(batch, switches).short_pieces())
        return model.text_model(torch.unique(ids, dim=0), walk_type="short")

    def long(batch):
        return model.text_model(ParsedBatch.parse(batch, switches).text_long, walk_type="long")

    return {"vision_ms": timed(vision), "text_short_ms": timed(short), "text_long_ms": timed(long)}


def markdown(result: dict) -> str:
    before, after = result["before"], result["after"]
    texts = result["texts_per_batch"]
    lines = [
        f"main job ({result['config']}, batch {result['batch_size']}): {texts['rows']} short-walk text rows per "
        f"batch, {texts['distinct']} distinct",
        "",
        "| phase | before (ms) | after (ms) |",
        "|---|---|---|",
    ]
    for key, name in (("collate_ms", "collate (decode, patches, tokenise)"), ("forward_backward_ms", "forward + "
                      "backward"), ("optimizer_ms", "optimiser step")):  # fmt: skip
        lines.append(f"| {name} | {before[key]:.0f} | {after[key]:.0f} |")
    step_before = before["collate_ms"] + before["forward_backward_ms"] + before["optimizer_ms"]
    step_after = after["collate_ms"] + after["forward_backward_ms"] + after["optimizer_ms"]
    lines.append(f"| **step** | **{step_before:.0f}** | **{step_after:.0f}** ({step_before / step_after:.2f}×) |")
    for label, part in (("before", before), ("after", after)):
        lines.append(f"\ntop operators {label} (% of self CPU time): {part['top_ops']}")
    if "phases" in result:
        lines += ["", phase_table(result)]
    return "\n".join(lines)


def phase_table(result: dict) -> str:
    """Where fgclip's step goes (the ``after`` step), validation amortised over the run's steps."""
    after, phases, val = result["after"], result["phases"], result["validation"]
    towers = phases["vision_ms"] + phases["text_short_ms"] + phases["text_long_ms"]
    rows = [
        ("vision tower, forward + backward", phases["vision_ms"]),
        ("text tower, short walk (distinct rows), forward + backward", phases["text_short_ms"]),
        ("text tower, long walk, forward + backward", phases["text_long_ms"]),
        ("heads, region pooling, losses, forward + backward", max(after["forward_backward_ms"] - towers, 0.0)),
        ("optimiser step", after["optimizer_ms"]),
        ("collation (decode, patches, tokenise)", after["collate_ms"]),
        (f"validation ({val['seconds']:.1f} s × {val['count']} over {val['steps']} steps)", val["per_step_ms"]),
    ]
    total = sum(ms for _, ms in rows)
    lines = ["| part of a step | ms | share |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.0f} | {100 * ms / total:.0f} % |" for name, ms in rows]
    lines.append(f"| **step, validation included** | **{total:.0f}** | |")
    return "\n".join(lines)
