"""The public benchmark tasks end to end with real (tiny golden) models of every family, the SigLIP 2 baseline,
the paper-number column, and sharded feature extraction under ``torchrun`` (2 CPU processes)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from fgclip_eval.cli import main

TASKS = "coco,flickr30k,coco-cn,dci,cifar10,dtd,coco-box,lvis-box,fgovd-hard,voc21,context59"
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def models(tmp_path_factory, clip_tokenizer, gemma_like_tokenizer):
    golden = __import__("pathlib").Path(__file__).parents[3] / "tests" / "fixtures" / "golden"
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, tokenizer in (("v1_s0", clip_tokenizer), ("v2_s1_fixed", gemma_like_tokenizer)):
        shutil.copytree(golden / name / "model", root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    out["siglip2"] = _tiny_siglip2(root / "siglip2", gemma_like_tokenizer)
    return out


def _tiny_siglip2(folder, tokenizer):
    import torch
    from transformers import Siglip2Config, Siglip2Model

    from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
    from fgclip_model.tiny import tower

    size = tower(32, 1, 2)
    config = Siglip2Config(
        text_config={**size, "vocab_size": 64, "max_position_embeddings": 64},
        vision_config={**size, "num_patches": 64, "patch_size": 16},
    )
    torch.manual_seed(0)
    Siglip2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    FGCLIP2ImageProcessor().save_pretrained(folder)
    return folder


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow  # every public task layout on two models
@pytest.mark.parametrize("model", ["v1_s0", "v2_s1_fixed"])
def test_public_tasks_run_with_region_models(model, models, benchmark_root, tmp_path):
    root, _ = benchmark_root
    out = tmp_path / "out"
    assert (
        main(
            [
                "--model",
                str(models[model]),
                "--data-root",
                str(root),
                "--tasks",
                TASKS,
                "--output",
                str(out),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    results = _results(out)["results"]
    assert list(results) == TASKS.split(",")
    for task, metrics in results.items():
        assert "skipped" not in metrics, (task, metrics)
        assert all(0 <= v <= 1 for k, v in metrics.items() if not k.startswith("n_")), (task, metrics)
    assert results["coco"]["i2t_r10"] >= results["coco"]["i2t_r1"]
    assert "| coco-box | n_boxes | 3 |" in (out / "results.md").read_text()


def test_siglip2_baseline(models, benchmark_root, tmp_path):
    root, _ = benchmark_root
    out = tmp_path / "out"
    assert (
        main(
            [
                "--model",
                str(models["siglip2"]),
                "--data-root",
                str(root),
                "--tasks",
                "coco,dci,coco-box,voc21",
                "--output",
                str(out),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    results = _results(out)["results"]
    assert set(results["coco"]) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert "i2t_r1" in results["dci"]  # long captions truncated to SigLIP 2's 64 tokens
    assert results["coco-box"] == {"skipped": "the siglip2 family has no region features"}
    assert results["voc21"] == {"skipped": "the siglip2 family has no dense features"}


def test_paper_column_for_official_checkpoints(models, benchmark_root, tmp_path, capsys):
    root, _ = benchmark_root
    official = tmp_path / "fg-clip2-so400m"  # the official name picks the published row
    shutil.copytree(models["v2_s1_fixed"], official)
    out = tmp_path / "out"
    assert (
        main(
            [
                "--model",
                str(official),
                "--data-root",
                str(root),
                "--tasks",
                "coco",
                "--output",
                str(out),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert "| coco | i2t_r1 |" in capsys.readouterr().out
    table = (out / "results.md").read_text()
    assert "| task | metric | value | paper |" in table and "| 0.751 |" in table and "| 0.586 |" in table
    assert _results(out)["paper"]["coco"] == {"i2t_r1": 0.751, "t2i_r1": 0.586}
    out2 = tmp_path / "out2"  # an unofficial name: no paper column unless asked for
    assert (
        main(
            [
                "--model",
                str(models["v2_s1_fixed"]),
                "--data-root",
                str(root),
                "--tasks",
                "coco",
                "--output",
                str(out2),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert "paper" not in (out2 / "results.md").read_text()
    assert (
        main(
            [
                "--model",
                str(models["v2_s1_fixed"]),
                "--paper",
                "nope",
                "--data-root",
                str(root),
                "--tasks",
                "coco",
                "--output",
                str(out2),
            ]
        )
        == 2
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_two_processes_match_one(models, benchmark_root, tmp_path):
    """Sharded feature extraction (uneven shards: 4 COCO images, 3 FG-OVD images, 1 VOC image) gathers back to
    the single-process matrices: identical metrics."""
    root, _ = benchmark_root
    tasks = "coco,flickr30k,coco-box,fgovd-hard,voc21"
    args = [
        "--model",
        str(models["v2_s1_fixed"]),
        "--data-root",
        str(root),
        "--tasks",
        tasks,
        "--workers",
        "0",
        "--quiet",
    ]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    single = subprocess.run(
        [sys.executable, "-m", "fgclip_eval.cli", *args, "--output", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "fgclip_eval.cli",
            *args,
            "--output",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("written:") == 1  # rank 0 alone writes the reports
    one, two = _results(tmp_path / "one")["results"], _results(tmp_path / "two")["results"]
    assert set(one) == set(two) == set(tasks.split(","))
    for task in one:
        assert one[task] == pytest.approx(two[task], abs=1e-6), task


def test_fixed_patch_budget_is_scoped(models):
    from fgclip_eval.encoders import Encoder

    encoder = Encoder.load(models["v2_s1_fixed"], workers=0, progress=False)
    with encoder.fixed_patches(1024):
        assert encoder.max_num_patches == 1024
    assert encoder.max_num_patches is None
    pinned = Encoder.load(models["v2_s1_fixed"], max_num_patches=64, workers=0, progress=False)
    with pinned.fixed_patches(1024):
        assert pinned.max_num_patches == 64  # an explicit --max-num-patches wins
    v1 = Encoder.load(models["v1_s0"], workers=0, progress=False)
    with v1.fixed_patches(1024):
        assert v1.max_num_patches is None  # square-image families have no patch budget


def test_bad_benchmark_files_are_reported_not_raised(models, benchmark_root, tmp_path, capsys):
    """A corrupt image and a malformed caption file each stop their own task with the file named; the other
    tasks of the run still complete."""
    root, _ = benchmark_root
    data = tmp_path / "data"
    shutil.copytree(root / "coco", data / "coco")
    shutil.copytree(root / "flickr30k", data / "flickr30k")
    shutil.copytree(root / "flickr30k-cna", data / "flickr30k-cna")
    broken = data / "coco" / "images" / "val2017" / "000000000004.jpg"
    broken.write_bytes(b"not a jpeg")
    cna = data / "flickr30k-cna" / "flickr30k_cna_test.txt"
    cna.write_text(cna.read_text(encoding="utf-8") + "a line without a tab\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(
        [
            "--model",
            str(models["v1_s0"]),
            "--data-root",
            str(data),
            "--tasks",
            "coco,flickr30k-cna,flickr30k",
            "--output",
            str(out),
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    results = _results(out)["results"]
    assert results["coco"]["skipped"].startswith("corrupt image (") and str(broken) in results["coco"]["skipped"]
    assert results["flickr30k-cna"]["skipped"].startswith(f"{cna}:11: expected")
    assert "i2t_r1" in results["flickr30k"]
    err = capsys.readouterr().err
    assert str(broken) in err and f"{cna}:11" in err


def test_hostile_models_and_images_are_one_line_each(models, benchmark_root, tmp_path, capsys, bomb_png, plant_pickle):
    """A pickle planted as a .pt or as a folder's weights is refused (its code never runs), an incomplete
    safetensors file is named, and a decompression bomb among the images skips its task with the reason."""
    root, _ = benchmark_root
    base = ["--data-root", str(root), "--tasks", "coco", "--workers", "0", "--quiet", "--output", str(tmp_path / "o")]
    plant_pickle(tmp_path / "longclip-evil.pt", tmp_path / "marker", key="token_embedding.weight")
    pickled = tmp_path / "pickled"
    shutil.copytree(models["v2_s1_fixed"], pickled)
    (pickled / "model.safetensors").unlink()
    plant_pickle(pickled / "pytorch_model.bin", tmp_path / "marker", key="logit_scale")
    truncated = tmp_path / "truncated"
    shutil.copytree(models["v2_s1_fixed"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    for model, message in (
        (tmp_path / "longclip-evil.pt", "refused: it holds objects other than tensors"),
        (pickled, "refused, a weight file holds objects that only code execution could rebuild"),
        (truncated, "truncated safetensors file"),
    ):
        capsys.readouterr()
        assert main(["--model", str(model), *base]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "marker").exists()

    data = tmp_path / "data"
    shutil.copytree(root / "coco", data / "coco")
    bomb = data / "coco" / "images" / "val2017" / "000000000004.jpg"
    bomb.write_bytes(bomb_png)
    out = tmp_path / "out"
    args = ["--model", str(models["v1_s0"]), "--data-root", str(data), "--tasks", "coco", "--output", str(out)]
    assert main([*args, "--workers", "0", "--quiet"]) == 1  # every task skipped
    skipped = _results(out)["results"]["coco"]["skipped"]
    assert skipped == f"image over the pixel limit (decompression bomb): {bomb}"
