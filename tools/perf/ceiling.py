"""How much faster than transformers' eager model any float32 runtime could be on this CPU.

A float32 runtime cannot beat the CPU's float32 matrix-product peak. For each inference row of the backends
part (both families, image and text, each batch size) this counts the row's floating-point operations with
``torch.utils.flop_counter`` on transformers' model, times that model, and divides the measured float32 peak
(the best of large matrix products at the towers' own widths, MKL through ``torch.mm``) by the rate the eager
model already reaches: the **ceiling** is the largest float32 speed-up left on this machine. Rows whose
ceiling is below a wanted speed-up cannot reach it in float32, whatever the runtime (only lower precision
can: bf16 where native, int8).
"""

from __future__ import annotations

import sys

import torch
from models import embedding_inputs, v1_pair, v2_pair
from timing import measure
from torch.utils.flop_counter import FlopCounterMode

PEAK_SHAPES = ((4096, 768, 3072), (4096, 3072, 768), (4096, 768, 768), (4096, 512, 2048), (4096, 4096, 4096))


def matmul_peak_gflops(min_run_time: float = 1.0) -> float:
    """The best float32 GFLOP/s of ``torch.mm`` over :data:`PEAK_SHAPES` (the towers' widths and a square)."""
    best = 0.0
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        ms, _ = measure(lambda a=a, b=b: torch.mm(a, b), min_run_time)
        best = max(best, 2 * m * k * n / (ms * 1e-3) / 1e9)
    return best


def _flops(fn) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def ceiling_rows(batches: list[int], min_run_time: float = 2.0, tiny: bool = False) -> list[dict]:
    """One row per (family, kind, batch): GFLOP, eager ms, achieved GFLOP/s, the ceiling over eager."""
    peak = matmul_peak_gflops(min_run_time / 2)
    rows = []
    for family, pair in (("FG-CLIP v1", v1_pair), ("FG-CLIP 2", v2_pair)):
        _, peer = pair(tiny, "cpu", torch.float32)
        for batch in batches:
            for kind, inputs, shape in embedding_inputs(family, batch, "cpu", torch.float32):
                fn = lambda inputs=inputs, kind=kind, peer=peer: getattr(peer, f"get_{kind}_features")(**inputs)  # noqa: E731
                flops = _flops(fn)
                ms, _ = measure(fn, min_run_time)
                achieved = flops / (ms * 1e-3) / 1e9
                row = {
                    "what": f"{family} {kind} embeddings",
                    "shape": shape,
                    "gflop": flops / 1e9,
                    "eager_ms": ms,
                    "eager_gflops": achieved,
                    "peak_gflops": peak,
                    "ceiling": peak / achieved,
                }
                rows.append(row)
                print(f"ceiling {row['what']} {shape}: {row['ceiling']:.2f}x", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    peak = rows[0]["peak_gflops"] if rows else 0.0
    lines = [
        f"float32 ceiling (float32 matrix-product peak of this CPU: {peak:.0f} GFLOP/s through torch.mm):",
        "",
        "| row | shape | GFLOP | transformers eager (ms) | its GFLOP/s | share of the peak | most any float32 "
        "runtime can gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['shape']} | {r['gflop']:.1f} | {r['eager_ms']:.1f} | {r['eager_gflops']:.0f} | "
            f"{100 / r['ceiling']:.0f} % | {r['ceiling']:.2f}× |"
        )
    return "\n".join(lines)
