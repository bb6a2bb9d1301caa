"""Timers and the result row of the harness (also imported by ``reference.py`` in the reference's interpreter)."""

from __future__ import annotations

import time
from dataclasses import dataclass

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
    cosine: float | None = None  # min cosine of the outputs to the peer's, where checked

    @property
    def ratio(self) -> float | None:
        return None if self.peer_ms is None else self.peer_ms / self.ours_ms


def median_iqr(ms: list[float]) -> tuple[float, float]:
    """(median, interquartile range) of timings in ms."""
    t = torch.tensor(ms)
    return t.median().item(), (t.quantile(0.75) - t.quantile(0.25)).item()


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
    return median_iqr(times)


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
    return median_iqr(times[fn_a]), median_iqr(times[fn_b])


def case_value(value, tensors: dict, device):
    if isinstance(value, str) and value.startswith("@"):
        return tensors[value[1:]].to(device)
    if isinstance(value, list):
        return [case_value(v, tensors, device) for v in value]
    return value


def measure_interleaved(fns: dict, min_run_time: float, rounds: int = 5) -> dict[str, tuple[float, float]]:
    """(median, IQR) in ms per callable of ``fns``, timed in ``rounds`` rounds of one block each, the order
    rotating every round, so that a shared machine's drift falls on all of them alike."""
    names = list(fns)
    per_call = {}
    with torch.inference_mode():
        for name in names:  # warm-up, and the calls per block
            fns[name]()
            start = time.perf_counter()
            fns[name]()
            per_call[name] = max(time.perf_counter() - start, 1e-4)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                calls = max(1, round(min_run_time / rounds / per_call[name]))
                for _ in range(calls):
                    start = time.perf_counter()
                    fns[name]()
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {name: median_iqr(values) for name, values in times.items()}
