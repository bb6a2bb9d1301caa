"""The performance harness stays runnable: a smoke run with small towers produces every row of the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_perf_harness_smoke(tmp_path):
    out = tmp_path / "perf.md"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "perf" / "run.py"),
        "--tiny",
        "--min-run-time",
        "0.05",
        "--step-repeats",
        "1",
        "--loader-samples",
        "40",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    paths = {row["what"] for row in result["rows"]}
    assert {
        "FG-CLIP v1 image features",
        "FG-CLIP 2 image features",
        "FG-CLIP v1 region features",
        "FG-CLIP v1 stage-2 step (fwd+bwd)",
    } <= paths
    compared = [row for row in result["rows"] if row["peer_ms"] is not None]
    assert compared and all(row["ratio"] > 0 for row in compared)
    no_ckpt, ckpt = result["memory"]
    assert ckpt["saved_activations_MiB"] < no_ckpt["saved_activations_MiB"]  # checkpointing saves activations
    assert result["loader"][0]["samples"] == 40
    assert "| path | shape |" in out.read_text()
