"""Counting what a long job skipped or repaired, and why — the project's rule for bad input.

A job either stops with a clear error that names the file, record and field (``strict=True``) or records the
problem here and goes on; every command prints :meth:`Report.summary` at the end.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input, located: ``file``, ``record`` (index in that file) and ``field``."""

    def __init__(self, reason: str, file: str | None = None, record: int | None = None, field: str | None = None):
        self.reason, self.file, self.record, self.field = reason, file, record, field
        super().__init__(f"{where(file, record, field)}: {reason}")

    def __reduce__(self):  # raised in a worker process, it arrives whole
        return (type(self), (self.reason, self.file, self.record, self.field))


def where(file: str | None = None, record: int | None = None, field: str | None = None) -> str:
    parts = [str(file) if file else "<input>"]
    if record is not None:
        parts.append(f"record {record}")
    if field:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


_COUNTING = threading.Lock()  # a batch's samples are built on several threads (fgclip_data.threads)


@dataclass
class Report:
    """Counts of skipped / repaired items by reason, with the first few locations of each."""

    strict: bool = False
    examples_per_reason: int = 3
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    done: Counter = field(default_factory=Counter)

    def problem(
        self, reason: str, file: str | None = None, record: int | None = None, field: str | None = None
    ) -> None:
        """Record a problem (or raise :class:`DataError` in strict mode)."""
        if self.strict:
            raise DataError(reason, file, record, field)
        with _COUNTING:
            self.counts[reason] += 1
            shown = self.examples.setdefault(reason, [])
            if len(shown) < self.examples_per_reason:
                shown.append(where(file, record, field))

    def count(self, what: str, n: int = 1) -> None:
        """Count a successful outcome (e.g. ``"records"``, ``"copied"``)."""
        with _COUNTING:
            self.done[what] += n

    def merge(self, other: Report) -> None:
        self.counts.update(other.counts)
        self.done.update(other.done)
        for reason, shown in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(shown[: max(0, self.examples_per_reason - len(mine))])

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self, title: str = "summary") -> str:
        lines = [f"== {title}"]
        lines += [f"  {what}: {n}" for what, n in sorted(self.done.items())]
        if not self.counts:
            lines.append("  problems: none")
        for reason, n in self.counts.most_common():
            lines.append(f"  {reason}: {n}  (e.g. {'; '.join(self.examples.get(reason, []))})")
        return "\n".join(lines)
