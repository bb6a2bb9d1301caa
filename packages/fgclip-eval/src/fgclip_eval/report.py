"""Benchmark results as JSON, a Markdown table and a bar chart (PNG)."""

from __future__ import annotations

import json
from pathlib import Path


def markdown(results: dict[str, dict]) -> str:
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, outcome in results.items():
        if "skipped" in outcome:
            lines.append(f"| {task} | — | skipped: {outcome['skipped']} |")
            continue
        for metric, value in outcome.items():
            lines.append(f"| {task} | {metric} | {value:.4f} |")
    return "\n".join(lines)


def chart(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels, values = [], []
    for task, outcome in results.items():
        for metric, value in outcome.items():
            if metric != "skipped":
                labels.append(f"{task}\n{metric}")
                values.append(value)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(values) + 2), 4.5))
    ax.bar(range(len(values)), values, color="#3b7dd8")
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, dict], out_dir: Path, model: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "results.png"}
    files["json"].write_text(json.dumps({"model": model, "results": results}, indent=2))
    files["markdown"].write_text(f"# Benchmark of {model}\n\n{markdown(results)}\n")
    chart(results, files["chart"], f"benchmark: {Path(model).name}")
    return files
