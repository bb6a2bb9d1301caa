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
    structure = {row["peer"] for row in result["rows"] if "ref. structure" in row["peer"]}
    assert len(structure) == 3  # per-kind text calls, per-sample pooling head, per-row text head
    compared = [row for row in result["rows"] if row["peer_ms"] is not None]
    assert compared and all(row["ratio"] > 0 for row in compared)
    no_ckpt, ckpt = result["memory"]
    assert ckpt["saved_activations_MiB"] < no_ckpt["saved_activations_MiB"]  # checkpointing saves activations
    assert result["loader"][0]["samples"] == 40
    assert "| path | shape |" in out.read_text()


STAND_IN = {
    # the reference repository's module paths, serving fgclip's own classes (the real checkout is not reachable
    # from these machines): this exercises the harness's reference path, not the reference's speed
    "fgclip/model/clip_strc/fgclip.py": (
        "from fgclip_model.fgclip import FGCLIPModel as _Model\n\n\n"
        "class FGCLIPModel(_Model):\n"
        "    def forward(self, **batch):  # the reference trains through forward()\n"
        "        return self.stage2_loss(**batch)\n"
    ),
    "fgclip2/model/strcs/fgclip2.py": "from fgclip_model.fgclip2 import FGCLIP2Model as FG_CLIP2_Model  # noqa: F401\n",
}


def test_reference_checkout_is_timed_in_its_own_interpreter(tmp_path):
    checkout = tmp_path / "FG-CLIP"
    for name, text in STAND_IN.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    out = tmp_path / "perf.md"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "perf" / "run.py"),
        "--tiny",
        "--batches=2",
        "--min-run-time=0.05",
        "--step-repeats=1",
        "--skip=inference,stage2,structure,loader",
        f"--reference={checkout}",
        f"--reference-python={sys.executable}",
        f"--out={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["peer"] for r in rows} == {"reference code (FG-CLIP)"}
    assert {r["what"] for r in rows} == {
        "FG-CLIP v1 image features",
        "FG-CLIP v1 text features",
        "FG-CLIP v1 region features",
        "FG-CLIP v1 stage-2 step (fwd+bwd)",
        "FG-CLIP 2 image features",
        "FG-CLIP 2 text features",
    }
    assert all(r["peer_ms"] > 0 and r["ratio"] > 0 for r in rows)
    assert "reference v1-step" in done.stderr  # timed by reference.py, in the other interpreter


def test_a_failing_reference_run_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "perf" / "run.py"),
        "--tiny",
        "--batches=1",
        "--skip=inference,stage2,structure,loader",
        f"--reference={tmp_path / 'empty'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "the reference run failed" in done.stderr and "No module named" in done.stderr
    typo = subprocess.run([*cmd, "--reference-families=fgclip,fgclip3"], capture_output=True, text=True, timeout=600)
    assert typo.returncode == 2 and "unknown ['fgclip3']" in typo.stderr
