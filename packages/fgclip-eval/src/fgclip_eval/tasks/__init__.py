"""The benchmark task registry: a name -> :class:`Task` (what it needs on disk, how to run it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class MissingDataset(FileNotFoundError):
    """A benchmark's files are not where the task looked; the message says where and which layout it expects."""


class NotApplicable(ValueError):
    """The task cannot run with this model (e.g. region tasks for a model without region features)."""


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    layout: str  # the files the task expects, for the missing-dataset message
    run: Callable  # (encoder, data_root: Path) -> dict[str, float]


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_tasks(names: list[str] | None) -> list[Task]:
    from . import fgshapes  # noqa: F401  (registers its tasks)

    if not names:
        return list(TASKS.values())
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)} (known: {', '.join(TASKS)})")
    return [TASKS[n] for n in names]


def require(path: Path, task: str, layout: str) -> Path:
    if not path.exists():
        raise MissingDataset(f"{task}: nothing at {path}; expected {layout}")
    return path
