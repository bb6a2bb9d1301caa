"""The performance harness stays runnable: a smoke run with small towers produces every row of the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess runs of the whole harness (1.5-4 minutes each here)

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools" / "perf"))


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
        "--backends",
        "eager,bf16",
        "--ceiling",
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
    ceiling = result["ceiling"]  # float32 peak over what transformers' eager model reaches, per row
    assert {(r["what"], r["shape"]) for r in ceiling} >= {("FG-CLIP v1 image embeddings", "B=1")}
    for row in ceiling:
        assert row["gflop"] > 0 and row["eager_gflops"] > 0
        assert row["ceiling"] == pytest.approx(row["peak_gflops"] / row["eager_gflops"])
    assert "most any float32 runtime can gain" in out.read_text()
    assert result["cpu"]["model"] and result["cpu"]["effective_class"]  # the CPU it came from
    assert out.read_text().startswith(f"CPU: {result['cpu']['model']}")


STAND_IN = {
    # the reference repositories' module paths, serving fgclip's own classes: this exercises the harness's
    # reference path (workers, interleaving, output checks, clean-up), not the reference's speed
    "fgclip/model/clip_strc/fgclip.py": (
        "from fgclip_data import Stage2Batch\n"
        "from fgclip_model.fgclip import FGCLIPModel as _Model\n\n\n"
        "class FGCLIPModel(_Model):\n"
        "    def forward(self, image, add_box_loss, use_hard_neg, **batch):  # the reference trains through forward()\n"
        "        return self.compute_loss(Stage2Batch(pixel_values=image, **batch))\n"
    ),
    "fgclip2/model/strcs/fgclip2.py": (
        "from fgclip_data import Stage2Batch\n"
        "from fgclip_model.fgclip2 import FGCLIP2Model as _Model\n\n\n"
        "class FG_CLIP2_Model(_Model):\n"
        "    def forward(self, add_box_loss, use_hard_neg, **batch):  # the reference trains through forward()\n"
        "        return self.compute_loss(Stage2Batch(**batch))\n\n"
        "    def get_image_features(self, *args, need_densefeature=False, **kwargs):\n"
        "        pooled = super().get_image_features(*args, **kwargs)\n"
        "        return (pooled, self.get_image_dense_features(*args, **kwargs)) if need_densefeature else pooled\n"
    ),
}


def _perf(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tools" / "perf" / "run.py"), "--tiny", "--batches=2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_reference_checkouts_are_timed_interleaved_in_their_own_workers(tmp_path):
    checkout = tmp_path / "FG-CLIP"
    for name, text in STAND_IN.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    out = tmp_path / "perf.md"
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "perf" / "run.py"),
            "--tiny",
            "--batches=2",
            "--min-run-time=0.05",
            "--step-repeats=1",
            "--skip=inference,backends,stage2,structure,loader",
            f"--reference=fgclip={checkout},{sys.executable}",
            f"--reference=fgclip2={checkout}",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    assert {r["peer"] for r in rows} == {"reference code (FG-CLIP)"}
    kinds = ("image", "text", "dense", "region")
    assert {r["what"] for r in rows} == {
        *(f"{name} {kind} features" for name in ("FG-CLIP v1", "FG-CLIP 2") for kind in kinds),
        "FG-CLIP v1 stage-2 step (fwd+bwd)",
        "FG-CLIP 2 stage-2 step (fwd+bwd)",
    }
    assert all(r["peer_ms"] > 0 and r["ratio"] > 0 for r in rows)
    agreement = result["reference_checks"]["agreement"]
    assert len(agreement) == len(rows) and all(a["max_abs_diff"] <= 1e-5 for a in agreement.values())
    assert agreement["v1-step"]["fgclip"] == pytest.approx(agreement["v1-step"]["reference"])
    assert result["reference_checks"]["patches"] == {"fgclip": [], "fgclip2": []}  # the stand-in needs none
    assert "against the reference (FG-CLIP 2)" in done.stderr  # progress
    assert not list(temp.glob("fgclip-perf-*"))  # weights, inputs, outputs and the copied checkout are deleted


def test_patches_apply_to_a_copy_and_disagreement_stops_the_run(tmp_path):
    import against_reference as harness

    checkout = tmp_path / "FG-CLIP"
    file = checkout / "fgclip" / "model" / "clip_strc" / "fgclip.py"
    file.parent.mkdir(parents=True)
    file.write_text("bbox_vision_outputs = x_rois.type(torch.bfloat16)\n")
    copy = tmp_path / "copy"
    applied = harness.apply_patches(harness.parse_reference(f"fgclip={checkout}"), copy)
    assert len(applied) == 1 and "bf16" in applied[0]
    assert "x_rois.type(feature_map.dtype)" in (copy / "fgclip" / "model" / "clip_strc" / "fgclip.py").read_text()
    assert "torch.bfloat16" in file.read_text()  # the checkout itself is untouched
    with pytest.raises(ValueError, match="FAMILY=CHECKOUT"):
        harness.parse_reference("fgclip3=/somewhere")

    # a reference whose features differ from fgclip's is an error, not a row
    (checkout / "fgclip2" / "model" / "strcs").mkdir(parents=True)
    file.write_text(STAND_IN["fgclip/model/clip_strc/fgclip.py"].replace(
        "class FGCLIPModel(_Model):\n", "class FGCLIPModel(_Model):\n"
        "    def get_image_features(self, *a, **k):\n        return super().get_image_features(*a, **k) * 2\n"
    ))  # fmt: skip
    done = _perf("--skip=inference,backends,stage2,structure,loader", "--min-run-time=0.01", "--step-repeats=1",
                 f"--reference=fgclip={checkout}")  # fmt: skip
    assert done.returncode != 0 and "fgclip and the reference disagree" in done.stderr


def test_a_failing_reference_run_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _perf("--skip=inference,backends,stage2,structure,loader", f"--reference=fgclip={tmp_path / 'empty'}")
    assert done.returncode != 0 and "the reference worker stopped" in done.stderr and "No module named" in done.stderr
    typo = _perf("--skip=inference,backends,stage2,structure,loader", "--reference=fgclip3=/x")
    assert typo.returncode == 2 and "FAMILY=CHECKOUT" in typo.stderr


def test_mainjob_profile_and_benchmark_throughput(tmp_path):
    """--mainjob profiles the default stage2 step phase by phase, before (every text row encoded) and after
    (each distinct text once); --throughput times the benchmark's image pass on COCO-sized JPEGs."""
    out = tmp_path / "perf.md"
    command = [
        sys.executable,
        str(ROOT / "tools" / "perf" / "run.py"),
        "--tiny",
        "--min-run-time=0.01",
        "--skip=inference,backends,stage2,structure,loader",
        "--backends=eager",
        "--mainjob",
        "--mainjob-override=data.fgshapes_n=120",
        "--mainjob-override=schedule.batch_size=8",
        "--throughput=4",
        f"--out={out}",
    ]
    env = {**os.environ, "FGCLIP_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    profile = result["mainjob"]
    texts = profile["texts_per_batch"]
    assert 0 < texts["distinct"] < texts["rows"]  # FG-Shapes batches repeat texts
    for part in ("before", "after"):
        assert all(profile[part][k] > 0 for k in ("collate_ms", "forward_backward_ms", "optimizer_ms"))
        assert profile[part]["top_ops"]
    (row,) = [r for r in result["throughput"] if r["workers"] == 0]
    assert row["images"] == 4 and row["images_per_second"] > 0 and 0 <= row["decode_wait_share"] < 1
    assert "| phase | before (ms) | after (ms) |" in out.read_text()
