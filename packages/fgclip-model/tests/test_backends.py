"""Inference backends (``fgclip_model.load(..., backend=...)``): each gives the eager model's embeddings — ONNX
Runtime to 1e-4 absolute (float32), the bf16 backends to 1e-3 in cosine on these tiny models (B/16-sized towers
stay within 1e-4, measured by tools/perf) — for several batch sizes and both families; regions and dense maps
too; the weights and the rest of the model are the eager model's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fgclip_model
from fgclip_model.backends import BACKENDS, GRAPH_BACKENDS, BackendModel, native_bf16, with_backend

MODELS = {"fgclip": "v1_s0", "fgclip2": "v2_s1_fixed"}


def _inputs(family, processor, n: int):
    sizes = [(64, 64), (90, 40), (50, 120)]
    generator = torch.Generator().manual_seed(n)
    images = [
        Image.fromarray(torch.randint(0, 256, (*sizes[i % 3], 3), generator=generator, dtype=torch.uint8).numpy())
        for i in range(n)
    ]
    texts = ["a red square on the left", "two blue circles", "a small green triangle at the top right"]
    kwargs = {"max_num_patches": 64} if family == "fgclip2" else {}
    pixels = dict(processor(images=images, **kwargs))
    tokens = processor(text=(texts * n)[:n], walk_type="short")
    return pixels, tokens


@pytest.fixture(scope="module")
def folders(golden, gemma_like_tokenizer, clip_tokenizer, tmp_path_factory):
    import shutil

    out = {}
    for family, name in MODELS.items():
        folder = tmp_path_factory.mktemp(family) / "model"
        shutil.copytree(golden / name / "model", folder)
        (gemma_like_tokenizer if family == "fgclip2" else clip_tokenizer).save_pretrained(folder)
        out[family] = folder
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize(
    "backend",
    [  # torch.compile and the ONNX export take minutes here: slow
        pytest.param(b, marks=pytest.mark.slow) if b in ("compile", *GRAPH_BACKENDS) else b
        for b in BACKENDS
        if b != "eager"
    ],
)
@torch.no_grad()
def test_backend_gives_the_eager_embeddings(folders, family, backend, monkeypatch, tmp_path):
    if backend in GRAPH_BACKENDS:
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
        monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path))
    if backend not in GRAPH_BACKENDS and not native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16: the bf16 backends are not meant for it")
    eager, processor = fgclip_model.load(folders[family])
    fast, _ = fgclip_model.load(folders[family], backend=backend)
    assert isinstance(fast, BackendModel) and fast.backend == backend
    assert fast.config.to_dict() == eager.config.to_dict()  # the rest is the eager model's
    for n in (1, 3):  # two batch sizes: a compiled graph must follow the shape
        pixels, tokens = _inputs(family, processor, n)
        for walk in ("short", "long"):
            ids, mask = tokens["input_ids"], tokens.get("attention_mask")
            if walk == "long":
                tokens_long = processor(text=["a long caption about the shapes in the picture"] * n, walk_type="long")
                ids, mask = tokens_long["input_ids"], tokens_long.get("attention_mask")
            got = fast.get_text_features(input_ids=ids, attention_mask=mask, walk_type=walk)
            want = eager.get_text_features(input_ids=ids, attention_mask=mask, walk_type=walk)
            assert got.dtype == torch.float32 and got.shape == want.shape
            _assert_close(got, want, backend)
        got, want = fast.get_image_features(**pixels), eager.get_image_features(**pixels)
        assert got.dtype == torch.float32 and got.shape == want.shape
        _assert_close(got, want, backend)
    boxes = [torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.5, 0.2, 0.9, 0.9]])] * len(pixels["pixel_values"])
    got = fast.get_image_region_features(**pixels, boxes=boxes)
    want = eager.get_image_region_features(**pixels, boxes=boxes)
    eagerly = "onnx" if backend in GRAPH_BACKENDS else backend  # graph backends: regions and dense maps in float32
    for g, w in zip(got, want, strict=True):
        _assert_close(g, w, eagerly)
    dense = fast.get_image_dense_features(**pixels), eager.get_image_dense_features(**pixels)
    _assert_close(dense[0].flatten(0, 1), dense[1].flatten(0, 1), eagerly)


def _assert_close(got: torch.Tensor, want: torch.Tensor, backend: str) -> None:
    if backend == "onnx":  # the float32 graph runtime: the eager numbers
        assert (got - want).abs().max() <= 1e-4
    elif backend == "int8":  # another model numerically: close in direction, never equal
        assert _cosine(got, want) >= 0.98
        assert (got - want).abs().max() > 1e-4
    else:
        assert _cosine(got, want) >= 1 - 1e-3
        assert (got - want).abs().max() > 0  # really computed in bf16, not the eager path


def test_backends_keep_the_weights_and_refuse_unknown_names(folders):
    eager, _ = fgclip_model.load(folders["fgclip"])
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        fgclip_model.load(folders["fgclip"], backend="tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        with_backend(eager, "fast")
    assert with_backend(eager, "eager") is eager
    fast = with_backend(eager, "bf16")
    assert fast.state_dict().keys() == {f"model.{k}" for k in eager.state_dict()}
    assert next(eager.parameters()).dtype == torch.float32  # the eager model is left in float32
    with pytest.raises(ValueError, match="load the model on the CPU"):
        with_backend(eager.to("meta"), "onnx")  # ONNX Runtime's CPU provider only
    with pytest.raises(ValueError, match="load the model on the CPU"):
        with_backend(eager.to("meta"), "int8")


@pytest.mark.slow  # ONNX exports
@torch.no_grad()
def test_onnx_backend_exports_once_per_weights(folders, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import fgclip_model.export as export

    monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path))
    first, _ = fgclip_model.load(folders["fgclip2"], backend="onnx")
    assert (first.export_dir / "manifest.json").is_file() and first.export_dir.parent == tmp_path / "onnx"

    def no_export(*_, **__):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_onnx", no_export)
    again, _ = fgclip_model.load(folders["fgclip2"], backend="onnx")  # same weights: the cached graphs
    assert again.export_dir == first.export_dir
    eager, _ = fgclip_model.load(folders["fgclip2"])
    with torch.no_grad():
        eager.logit_scale.add_(1.0)  # other weights: another fingerprint, a new export
    with pytest.raises(AssertionError, match="exported again"):
        with_backend(eager, "onnx")


@pytest.mark.parametrize(
    ("isa", "allowed"),
    [("AVX2", False), ("avx512_core", False), ("SSE41", False), ("AVX512_CORE_BF16", True), ("ALL", True)],
)
def test_bf16_is_not_native_when_onednn_is_held_below_avx512_bf16(monkeypatch, isa, allowed):
    """Holding oneDNN to AVX2 (to measure an AVX2-only CPU on a newer one) must not leave the bf16 backends on
    the emulated bf16 path, which is many times slower than float32."""
    from fgclip_model.backends import onednn_allows_bf16

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert onednn_allows_bf16() is allowed
    if not allowed:
        assert native_bf16("cpu") is False
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert onednn_allows_bf16()


@pytest.mark.parametrize("native", [True, False])
def test_auto_backend_is_bf16_where_bf16_is_native_else_eager(monkeypatch, native):
    """``backend="auto"``: bf16 autocast where the device has native bf16 (faster there, within 1e-4 in cosine),
    the eager model elsewhere; never int8 (other embeddings); an unknown name is still refused."""
    from fgclip_model import backends
    from fgclip_model.fgclip2.modeling import FGCLIP2Model
    from fgclip_model.tiny import fgclip2_config

    monkeypatch.setattr(backends, "native_bf16", lambda device: native)
    model = FGCLIP2Model(fgclip2_config()).eval()
    assert backends.pick_backend("cpu") == ("bf16" if native else "eager")
    chosen = with_backend(model, "auto")
    if native:
        assert isinstance(chosen, BackendModel) and chosen.backend == "bf16"
    else:
        assert chosen is model
    with pytest.raises(ValueError, match="unknown backend"):
        with_backend(model, "fastest")


def test_a_missing_runtime_names_its_extra(monkeypatch, folders):
    """Without ONNX Runtime installed the graph backends fail in one line naming the pip extra, before exporting."""
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without it gives on import
    eager, _ = fgclip_model.load(folders["fgclip"])
    for backend in ("onnx", "int8"):
        with pytest.raises(ImportError, match=rf"backend='{backend}' needs the onnx extra.*fgclip-model\[onnx\]"):
            with_backend(eager, backend)


@pytest.mark.slow  # ONNX export and quantisation
@torch.no_grad()
def test_int8_quantises_once_and_keeps_the_float32_export(folders, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from fgclip_model import backends

    monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path))
    first, _ = fgclip_model.load(folders["fgclip"], backend="int8")
    folder = first.export_dir
    quantised = sorted(p.name for p in (folder / "int8").iterdir())
    assert quantised == sorted(p.name for p in folder.glob("*.onnx"))  # every graph, none half-written
    assert not list((folder / "int8").glob("*.partial"))

    def no_quantisation(*_, **__):
        raise AssertionError("quantised again")

    monkeypatch.setattr(backends, "quantise_dynamic_int8", no_quantisation)
    again, _ = fgclip_model.load(folders["fgclip"], backend="int8")
    assert again.export_dir == folder
    fp32, _ = fgclip_model.load(folders["fgclip"], backend="onnx")  # the float32 graphs are still there
    assert fp32.export_dir == folder
