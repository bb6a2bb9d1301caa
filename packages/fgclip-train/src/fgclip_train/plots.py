"""The training-curve plot every run writes next to its ``metrics.jsonl``: the loss terms per step (top) and the
validation metrics at each evaluation (bottom)."""

from __future__ import annotations

import json
from pathlib import Path

PLOT_NAME = "training_curves.png"
LOSS_COLUMNS = ("loss", "loss_short", "loss_long", "loss_region", "loss_tic", "loss_hard")


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(step records, evaluation records) of a ``metrics.jsonl``; a resumed run's replayed steps keep the last
    record of each step."""
    steps: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        (evals if "eval" in record else steps)[int(record.get("step", 0))] = record
    return [steps[k] for k in sorted(steps)], [evals[k] for k in sorted(evals)]


def plot_training_curves(metrics_file: str | Path, out: str | Path | None = None) -> Path | None:
    """Draw ``metrics_file``'s curves into ``out`` (default: ``training_curves.png`` beside it); returns the
    path, or None when the file holds nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics_file = Path(metrics_file)
    steps, evals = read_metrics(metrics_file)
    losses = [c for c in LOSS_COLUMNS if any(c in r for r in steps)]
    scores = sorted({k for r in evals for k, v in r.items() if k not in ("step", "eval") and isinstance(v, float)})
    if not losses and not scores:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for column in losses:
        points = [(r["step"], r[column]) for r in steps if column in r]
        top.plot(*zip(*points, strict=True), label=column.removeprefix("loss_") if column != "loss" else "total")
    top.set_ylabel("training loss")
    top.set_yscale("log" if losses and all(r.get("loss", 1) > 0 for r in steps) else "linear")
    if losses:
        top.legend(fontsize=8, ncol=3)
    top.grid(alpha=0.3)
    for name in scores:
        points = [(r["step"], r[name]) for r in evals if name in r]
        bottom.plot(*zip(*points, strict=True), marker="o", label=name)
    bottom.set_ylabel("validation metric")
    bottom.set_xlabel("step")
    bottom.set_ylim(0, 1)
    if scores:
        bottom.legend(fontsize=8, ncol=2)
    bottom.grid(alpha=0.3)
    fig.suptitle(metrics_file.parent.name)
    fig.tight_layout()
    out = Path(out) if out is not None else metrics_file.with_name(PLOT_NAME)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
