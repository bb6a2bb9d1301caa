"""Batch preparation on the training process's cores: a thread pool for work that releases the GIL.

With no loader workers (the CPU default: a worker process would take a core from the step's matmuls) a batch is
prepared while the step waits, and one core would do it alone. Image decoding and resizing (PIL) and the patch
tables (NumPy) run in C without the GIL, so a batch's images are shared among as many threads as torch uses for
the step (``torch.get_num_threads()``). Inside a loader worker the workers already run in parallel, and the work
stays on the worker's own thread.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch.utils.data import get_worker_info

T = TypeVar("T")
R = TypeVar("R")

_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, pool)
_lock = threading.Lock()


def batch_threads() -> int:
    """Threads for preparing a batch here: torch's intra-op threads in the training process, 1 in a loader worker
    or inside a thread of the pool itself."""
    if get_worker_info() is not None or threading.current_thread().name.startswith("fgclip-batch"):
        return 1
    return max(1, torch.get_num_threads())


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:  # a fork or a new thread count
            _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="fgclip-batch"))
        return _pool[2]


def thread_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, in order, on :func:`batch_threads` threads; an error is raised as in the loop."""
    threads = min(batch_threads(), len(items))
    if threads <= 1:
        return [fn(x) for x in items]
    return list(_executor(threads).map(fn, items))


def chunks(items: Sequence[T], count: int) -> list[Sequence[T]]:
    """``items`` cut into ``count`` (or fewer) consecutive, near-equal parts (non-empty; one empty part for none)."""
    count = max(1, min(count, len(items)))
    bounds = [round(k * len(items) / count) for k in range(count + 1)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]
