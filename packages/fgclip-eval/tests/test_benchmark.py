"""The benchmark command on FG-Shapes with the tiny golden checkpoints of every family."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_eval.cli import main


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "fgshapes"
    generate(folder, GenerateOptions(n=40, seed=2, workers=1))
    return folder


def _checkpoint(tmp_path, golden, name, tokenizer):
    folder = tmp_path / name
    shutil.copytree(golden / name / "model", folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["v1_s0", "v2_s1_fixed"])
def test_every_fgshapes_task_runs_and_writes_reports(
    family, shapes, golden, tmp_path, clip_tokenizer, gemma_like_tokenizer, capsys
):
    tokenizer = clip_tokenizer if family == "v1_s0" else gemma_like_tokenizer
    model = _checkpoint(tmp_path, golden, family, tokenizer)
    out = tmp_path / "out"
    assert main(["--model", str(model), "--data-root", str(shapes.parent), "--output", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    results = record["results"]
    assert set(results) == {"fgshapes-retrieval", "fgshapes-hard-negatives", "fgshapes-box-classification"}
    assert record["machine"]["model"] and record["machine"]["effective_class"]  # the CPU the figures came from
    retrieval = results["fgshapes-retrieval"]
    assert set(retrieval) == {f"{c}_{d}_r{k}" for c in ("short", "long") for d in ("i2t", "t2i") for k in (1, 5)}
    assert all(0 <= v <= 1 for r in results.values() for v in r.values())
    assert results["fgshapes-box-classification"]["top5"] >= results["fgshapes-box-classification"]["top1"]
    assert "| fgshapes-hard-negatives | accuracy |" in (out / "results.md").read_text()
    assert Image.open(out / "results.png").format == "PNG"
    assert "fgshapes-box-classification" in capsys.readouterr().out


def test_clip_models_skip_region_tasks(shapes, golden, tmp_path, clip_tokenizer):
    from fgclip_model.longclip import load_longclip_checkpoint

    folder = tmp_path / "longclip"
    load_longclip_checkpoint(golden / "longclip_s0" / "longclip-tiny.pt").save_pretrained(folder)
    clip_tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    assert main(["--model", str(folder), "--data-root", str(shapes), "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert "long_i2t_r1" in results["fgshapes-retrieval"]
    assert results["fgshapes-hard-negatives"] == {"skipped": "the longclip family has no region features"}


def test_clear_messages(tmp_path, golden, clip_tokenizer, capsys, monkeypatch):
    model = _checkpoint(tmp_path, golden, "v1_s0", clip_tokenizer)
    assert main(["--model", str(model), "--data-root", str(tmp_path / "nowhere"), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"nothing at {tmp_path / 'nowhere' / 'fgshapes' / 'manifest.json'}" in err and "fgshapes generate" in err
    assert main(["--tasks", "coco-retrieval"]) == 2 and "unknown task" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path / "empty-cache"))
    assert main([]) == 2 and "nothing at" in capsys.readouterr().err  # no run and no FG-Shapes to build one for
    assert main(["--list"]) == 0 and "fgshapes-retrieval" in capsys.readouterr().out


def test_no_arguments_without_a_run_uses_a_random_tiny_model(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FGCLIP_CACHE", str(shapes.parent))
    cached = shapes.parent / "fgshapes-n40-s2-en"  # where stage2 would have generated it
    if not cached.exists():
        cached.symlink_to(shapes)
    assert main([]) == 0
    assert "random tiny FG-CLIP 2" in capsys.readouterr().err
    results = json.loads((tmp_path / "benchmark-results" / "results.json").read_text())["results"]
    assert set(results["fgshapes-hard-negatives"]) == {"accuracy"}


def test_a_missing_optional_dependency_is_one_line(shapes, golden, tmp_path, gemma_like_tokenizer, monkeypatch, capsys):
    from fgclip_eval.tasks import TASKS, Task, get_tasks

    get_tasks(["all"])
    model = _checkpoint(tmp_path, golden, "v2_s1_fixed", gemma_like_tokenizer)

    def needs_mmseg(encoder, data_root):
        raise ImportError("segmentation needs mmsegmentation: pip install 'fgclip-eval[seg]'")

    original = TASKS["fgshapes-retrieval"]
    monkeypatch.setitem(
        TASKS, "fgshapes-retrieval", Task(original.name, original.description, "", needs_mmseg, original.groups)
    )
    args = ["--model", str(model), "--data-root", str(shapes.parent), "--output", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--workers", "0"]) == 0  # the other FG-Shapes tasks still ran
    err = [line for line in capsys.readouterr().err.splitlines() if "fgshapes-retrieval" in line]
    assert err == ["benchmark: fgshapes-retrieval: segmentation needs mmsegmentation: pip install 'fgclip-eval[seg]'"]


@pytest.mark.parametrize("backend", [pytest.param("onnx", marks=pytest.mark.slow), "bf16"])  # onnx: an export
def test_backend_switch_gives_the_eager_results(backend, shapes, golden, tmp_path, gemma_like_tokenizer, monkeypatch):
    """``benchmark --backend``: ONNX Runtime (float32) reproduces the eager metrics; bf16 the features to 1e-3."""
    import torch
    import torch.nn.functional as F

    from fgclip_eval.encoders import Encoder
    from fgclip_model.backends import BackendModel, native_bf16

    if backend == "onnx":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    elif not native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path / "cache"))
    model = _checkpoint(tmp_path, golden, "v2_s1_fixed", gemma_like_tokenizer)
    results = {}
    for name in ("eager", backend):
        out = tmp_path / name
        args = ["--model", str(model), "--data-root", str(shapes.parent), "--output", str(out), "--quiet"]
        assert main([*args, "--backend", name, "--tasks", "fgshapes-retrieval,fgshapes-box-classification"]) == 0
        results[name] = json.loads((out / "results.json").read_text())["results"]
    if backend == "onnx":
        assert results["onnx"] == results["eager"]
    eager = Encoder.load(model, workers=0, progress=False)
    fast = Encoder.load(model, backend=backend, workers=0, progress=False)
    assert isinstance(fast.model, BackendModel) and fast.model.backend == backend
    items = sorted((shapes / "images").rglob("*.jpg"))[:6] or sorted(shapes.rglob("*.jpg"))[:6]
    texts = ["a red circle", "two blue squares on the left"]
    for a, b in ((eager.images(items), fast.images(items)), (eager.texts(texts), fast.texts(texts))):
        assert F.cosine_similarity(a, b).min() >= 1 - 1e-3
        assert a.dtype == b.dtype == torch.float32


def test_encoder_sorts_texts_caches_repeated_lists_and_counts_its_time(shapes, golden, tmp_path, clip_tokenizer):
    """Texts encoded shortest first come back in the caller's order with each text's own features; a list seen
    before (class prompts shared by tasks) is served from the cache; images/s and the decode-wait share are
    recorded and written to results.json."""
    import torch

    from fgclip_eval.encoders import Encoder

    model = _checkpoint(tmp_path, golden, "v1_s0", clip_tokenizer)
    encoder = Encoder.load(model, workers=0, progress=False, text_batch_size=3)
    texts = ["a very long caption about a small red circle at the top left of the picture", "a dog",
             "two blue squares", "x", "a green triangle on the right and a yellow star below it"]  # fmt: skip
    together = encoder.texts(texts)
    alone = torch.cat([encoder.texts([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert encoder.stats.texts == 2 * len(texts) and encoder.stats.cached_texts == 0

    def no_encoding(*_, **__):
        raise AssertionError("encoded again")

    encoder._text_features = no_encoding
    assert torch.equal(encoder.texts(texts), together)  # the cache
    assert encoder.stats.cached_texts == len(texts)
    with pytest.raises(AssertionError, match="encoded again"):
        encoder.texts(texts, walk="long")  # another walk is another entry

    encoder = Encoder.load(model, workers=0, progress=False, batch_size=4)
    items = sorted(shapes.rglob("*.jpg"))[:10]
    encoder.images(items)
    stats = encoder.stats.summary()
    assert stats["images"] == 10 and stats["images_per_second"] > 0 and 0 < stats["decode_wait_share"] < 1

    out = tmp_path / "out"
    assert main(["--model", str(model), "--data-root", str(shapes.parent), "--output", str(out), "--quiet"]) == 0
    throughput = json.loads((out / "results.json").read_text())["throughput"]
    assert throughput["images"] > 0 and throughput["cached_texts"] >= 0
