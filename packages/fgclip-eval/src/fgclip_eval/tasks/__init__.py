"""The benchmark task registry: a name -> :class:`Task` (what it needs on disk, how to run it).

Tasks live in one module per kind (``retrieval``, ``classification``, ``boxes``, ``segmentation``,
``fgshapes``); each registers its tasks on import with the :func:`task` decorator (families of tasks built in a
loop call it as ``task(...)(run)``). ``--tasks`` takes task names and group names (``retrieval``,
``classification``, ``boxes``, ``segmentation``, ``fgshapes``, ``chinese`` ...) and ``all``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MODULES = ("fgshapes", "retrieval", "classification", "boxes", "segmentation")
DEFAULT_GROUP = "fgshapes"


class MissingDataset(FileNotFoundError):
    """A benchmark's files are not where the task looked; the message says where and which layout it expects."""


class BadDataset(ValueError):
    """A benchmark file is there but malformed; the message names the file (and line) and what was expected."""


class NotApplicable(ValueError):
    """The task cannot run with this model (e.g. region tasks for a model without region features)."""


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    layout: str  # the files the task expects, for the missing-dataset message
    run: Callable  # (encoder, data_root: Path) -> dict[str, float]
    groups: tuple[str, ...] = field(default=())


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def task(name: str, description: str, layout: str, groups: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Register the decorated ``run(encoder, data_root) -> metrics`` as the benchmark task ``name``::

    @task("coco-box", "COCO val2017 box classification", COCO_BOX_LAYOUT, groups=("boxes",))
    def coco_boxes(encoder, data_root): ...
    """

    def decorate(run: Callable) -> Callable:
        register(Task(name, description, layout, run, tuple(groups)))
        return run

    return decorate


def _load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")


def groups() -> dict[str, list[str]]:
    _load_all()
    out: dict[str, list[str]] = {}
    for task in TASKS.values():
        for group in task.groups:
            out.setdefault(group, []).append(task.name)
    return out


def get_tasks(names: list[str] | None) -> list[Task]:
    """Tasks by name or group (``all`` for every task; none given: the FG-Shapes group)."""
    _load_all()
    names = names or [DEFAULT_GROUP]
    by_group = groups()
    selected: list[str] = []
    unknown = []
    for name in names:
        if name == "all":
            selected += list(TASKS)
        elif name in TASKS:
            selected.append(name)
        elif name in by_group:
            selected += by_group[name]
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"unknown task(s) {', '.join(unknown)} (tasks: {', '.join(TASKS)}; groups: all, {', '.join(by_group)})"
        )
    return [TASKS[n] for n in dict.fromkeys(selected)]


def require(path: Path, task: str, layout: str) -> Path:
    if not path.exists():
        raise MissingDataset(f"{task}: nothing at {path}; expected {layout}")
    return path


def first_existing(candidates: list[Path], task: str, layout: str) -> Path:
    """The first of ``candidates`` that exists, or a MissingDataset naming every place looked at."""
    for path in candidates:
        if path.exists():
            return path
    looked = " or ".join(str(p) for p in candidates)
    raise MissingDataset(f"{task}: nothing at {looked}; expected {layout}")
