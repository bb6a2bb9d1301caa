"""Benchmark results as JSON, a Markdown table (with the published numbers when known) and a bar chart (PNG).

Metric keys starting with ``n_`` are counts (images, boxes, items): shown in the table, left out of the chart.
"""

from __future__ import annotations

import json
from pathlib import Path


def is_count(metric: str) -> bool:
    return metric.startswith("n_")


def markdown(results: dict[str, dict], paper: dict[str, dict[str, float]] | None = None) -> str:
    header = "| task | metric | value |" + (" paper |" if paper else "")
    lines = [header, "|---|---|---|" + ("---|" if paper else "")]
    for task, outcome in results.items():
        if "skipped" in outcome:
            lines.append(f"| {task} | — | skipped: {outcome['skipped']} |" + (" |" if paper else ""))
            continue
        for metric, value in outcome.items():
            shown = f"{int(value)}" if is_count(metric) else f"{value:.4f}"
            row = f"| {task} | {metric} | {shown} |"
            if paper:
                published = paper.get(task, {}).get(metric)
                row += f" {published:.3f} |" if published is not None else " |"
            lines.append(row)
    return "\n".join(lines)


def chart(results: dict[str, dict], path: Path, title: str, paper: dict[str, dict[str, float]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels, values, published = [], [], []
    for task, outcome in results.items():
        for metric, value in outcome.items():
            if metric != "skipped" and not is_count(metric):
                labels.append(f"{task}\n{metric}")
                values.append(value)
                published.append((paper or {}).get(task, {}).get(metric))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(values) + 2), 4.5))
    ax.bar(range(len(values)), values, color="#3b7dd8", label="measured")
    marks = [(i, p) for i, p in enumerate(published) if p is not None]
    if marks:
        ax.scatter([i for i, _ in marks], [p for _, p in marks], marker="_", s=400, color="#d8553b", label="paper")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(
    results: dict[str, dict],
    out_dir: Path,
    model: str,
    paper: dict[str, dict[str, float]] | None = None,
    throughput: dict | None = None,
) -> dict[str, Path]:
    """results.json (with the encoder's ``throughput`` when given, and the machine it ran on), results.md and the
    results.png chart."""
    from fgclip_model.machine import machine_record

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "results.png"}
    record = {"model": model, "results": results, "paper": paper or {}, "machine": machine_record()}
    if throughput:
        record["throughput"] = throughput
    files["json"].write_text(json.dumps(record, indent=2))
    files["markdown"].write_text(f"# Benchmark of {model}\n\n{markdown(results, paper)}\n")
    chart(results, files["chart"], f"benchmark: {Path(model).name}", paper)
    return files


def throughput_line(stats: dict) -> str:
    """One line of an encoder's throughput (``EncoderStats.summary()``)."""
    parts = []
    if stats.get("images"):
        parts.append(
            f"{stats['images']} images at {stats['images_per_second']:.1f}/s "
            f"({100 * stats['decode_wait_share']:.0f}% of it waiting for decoded batches)"
        )
    if stats.get("texts"):
        parts.append(f"{stats['texts']} texts at {stats['texts_per_second']:.0f}/s")
    if stats.get("cached_texts"):
        parts.append(f"{stats['cached_texts']} texts from the cache")
    return "; ".join(parts) or "nothing encoded"
