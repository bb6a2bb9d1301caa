"""Inference backends: the same embeddings, computed by faster machinery.

``with_backend(model, name)`` (or ``fgclip_model.load(path, backend=name)``) returns a model whose
``get_image_features`` / ``get_text_features`` / ``get_image_region_features`` / ``get_image_dense_features``
run through the chosen backend and return float32 tensors; every other attribute is the eager model's.

=========  ================================================================================================
``eager``   PyTorch as loaded (float32 on the CPU): the reference numbers.
``bf16``    PyTorch under ``torch.autocast(bfloat16)``: matmuls in bf16, normalisation and softmax in fp32.
            Worth it where the hardware has native bf16 (CPUs with AVX512-BF16 or AMX, every recent GPU).
``compile`` ``torch.compile`` (inductor) of the image and text encoders with frozen weights, in bf16 where the
            hardware has native bf16 and float32 elsewhere; region and dense features run eagerly (under
            autocast when bf16). The first call of each shape compiles (seconds to a minute); later batch sizes and
            lengths reuse a dynamic graph.
``onnx``    ONNX Runtime (CPU) on graphs exported by :func:`fgclip_model.export.export_onnx`, float32; the
            export is cached under ``$FGCLIP_CACHE/onnx/<fingerprint of the weights>``. Region and dense
            features run eagerly. Needs the ``onnx`` extra.
``int8``    ONNX Runtime on the exported graphs with their matrix products dynamically quantised to int8: the
            fastest on CPUs, but a **different model numerically** (cosine to float32 ~0.99-0.9999): a labelled
            choice whose retrieval figures docs/performance.md reports next to float32; ``auto`` never picks it.
``auto``    :func:`pick_backend`'s choice for the device: ``bf16`` where bf16 matmuls are native, else ``eager``.
=========  ================================================================================================

Which is fastest depends on the machine: ``tools/perf/run.py`` measures all of them against transformers'
models (docs/performance.md). The bf16 backends change embeddings by about 1e-5 to 1e-4 in cosine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BACKENDS = ("eager", "bf16", "compile", "onnx", "int8")
AUTO = "auto"  # the backend :func:`pick_backend` chooses for the device
CHOICES = (*BACKENDS, AUTO)


def onednn_allows_bf16() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` (or its older name ``DNNL_MAX_CPU_ISA``) holds oneDNN below AVX512-BF16,
    e.g. ``AVX2`` to measure an AVX2-only CPU on a newer one: bf16 matmuls then run through a slow emulation."""
    from fgclip_model.machine import CLASSES, onednn_cap

    cap = onednn_cap(os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "")
    return cap is None or CLASSES.index(cap) >= CLASSES.index("avx512_bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matmuls natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX that oneDNN
    is allowed to use)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(hardware) and onednn_allows_bf16()
    return False


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_float(out):
    """Backend outputs as float32: a tensor, a list of tensors, or a model output's ``pooler_output``."""
    out = getattr(out, "pooler_output", out)
    if isinstance(out, torch.Tensor):
        return out.float()
    return [o.float() for o in out]


def _cast_floats(values: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in values.items()}


class BackendModel(nn.Module):
    """An eager model with its feature methods routed through a backend (``name``); the rest is the model's."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.backend = model, name

    def __getattr__(self, item: str):
        try:
            return super().__getattr__(item)
        except AttributeError:
            return getattr(super().__getattr__("model"), item)

    def _run(self, method: str, args: tuple, kwargs: dict):
        return getattr(self.model, method)(*args, **kwargs)

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _to_float(self._run("get_image_features", args, kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _to_float(self._run("get_text_features", args, kwargs))

    def get_image_region_features(self, *args, **kwargs) -> list[torch.Tensor]:
        return _to_float(self._run("get_image_region_features", args, kwargs))

    def get_image_dense_features(self, *args, **kwargs) -> torch.Tensor:
        return _to_float(self._run("get_image_dense_features", args, kwargs))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


class AutocastModel(BackendModel):
    """``bf16``: the eager model's feature methods under ``torch.autocast``."""

    def _run(self, method, args, kwargs):
        device = _device(self.model)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return getattr(self.model, method)(*args, **kwargs)


class CompiledModel(BackendModel):
    """``compile``: inductor graphs of the image and text encoders over a copy of the weights in the compute
    dtype (bf16 with native support, else float32), frozen as constants (inference only)."""

    COMPILED = ("get_image_features", "get_text_features")

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__(model, name)
        self.dtype = torch.bfloat16 if native_bf16(_device(model)) else torch.float32
        fast = model if self.dtype == next(model.parameters()).dtype else copy.deepcopy(model).to(self.dtype)
        object.__setattr__(self, "_fast", fast.eval())  # not a submodule: state_dict() stays the eager model's
        self._compiled: dict[str, Callable] = {
            m: torch.compile(getattr(fast, m), options={"freezing": True}) for m in self.COMPILED
        }

    def _run(self, method, args, kwargs):
        if method not in self._compiled:  # regions and dense maps: eagerly (under autocast with bf16 weights)
            if self.dtype == torch.float32:
                return super()._run(method, args, kwargs)
            return AutocastModel._run(self, method, args, kwargs)
        args = tuple(a.to(self.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        with torch.no_grad():  # frozen weights are constants: compiled graphs run without autograd
            return self._compiled[method](*args, **_cast_floats(kwargs, self.dtype))


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's config and weights (the ONNX export's cache key)."""
    digest = hashlib.sha256(model.config.to_json_string().encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def onnx_cache() -> Path:
    return Path(os.environ.get("FGCLIP_CACHE", Path.home() / ".cache" / "fgclip")) / "onnx"


def _import_or_explain(module: str, backend: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"backend={backend!r} needs the {extra} extra: pip install 'fgclip-model[{extra}]'") from err


class OnnxModel(BackendModel):
    """``onnx``: ONNX Runtime (CPU provider) sessions over the exported image graph and text walks
    (:func:`fgclip_model.export.export_onnx`, cached per weights), float32; region and dense features run
    eagerly. :meth:`_runner` turns a graph file into a function of the input tensors."""

    def __init__(self, model: nn.Module, name: str, export_dir: str | os.PathLike | None = None) -> None:
        super().__init__(model, name)
        _import_or_explain("onnxruntime", name, "onnx")
        from fgclip_model.export import export_onnx

        folder = Path(export_dir) if export_dir else onnx_cache() / weights_fingerprint(model)
        if not (folder / "manifest.json").is_file():
            export_onnx(model, folder, check=False)
        manifest = json.loads((folder / "manifest.json").read_text())
        self._runners = {name: self._runner(folder / graph["file"]) for name, graph in manifest["graphs"].items()}
        self._naflex = "pixel_attention_mask" in manifest["graphs"]["image"]["inputs"]
        self.export_dir = folder

    def _runner(self, file: Path) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        import onnxruntime as ort

        from fgclip_model.export import run_session

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        return lambda feed: run_session(session, feed)

    def _session(self, name: str, feed: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._runners[name](feed)

    def _run(self, method, args, kwargs):
        if method == "get_image_features":
            names = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
            feed = dict(zip(names, args, strict=False)) | kwargs
            return self._session("image", {k: v for k, v in feed.items() if v is not None})
        if method == "get_text_features":
            names = ("input_ids", "attention_mask")
            feed = dict(zip(names, args, strict=False)) | kwargs
            walk = feed.pop("walk_type", None) or "short"
            if self._naflex:  # FG-CLIP 2 pools the last position: the graph takes the walk's full length
                feed["input_ids"], feed["attention_mask"] = self.model._pad_to_walk(
                    feed["input_ids"], feed.get("attention_mask"), walk
                )
            if feed.get("attention_mask") is None:  # no mask: every position attends, as a mask of ones
                feed["attention_mask"] = torch.ones_like(feed["input_ids"])
            return self._session(f"text_{walk}", feed)
        return super()._run(method, args, kwargs)  # regions and dense maps: eagerly


class Int8Model(OnnxModel):
    """``int8``: the exported graphs with their matrix products quantised dynamically to int8 (weights per output
    channel, 7-bit so AVX2 kernels cannot saturate; activations per call), run by ONNX Runtime. Faster than any
    float32 path on CPUs, but **not the same embeddings**: cosine to float32 ~0.99-0.9999 depending on the model,
    so retrieval figures move (docs/performance.md reports them next to float32). A separate choice: ``auto``
    never picks it. The quantised graphs are cached next to the float32 export (``int8/``)."""

    def _runner(self, file: Path):
        quantised = file.parent / "int8" / file.name
        if not quantised.is_file():
            quantise_dynamic_int8(file, quantised)
        return super()._runner(quantised)


def quantise_dynamic_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of ``source``'s MatMul / Gemm weights into ``target`` (written
    through a temporary name, so an interrupted run never leaves a half-written graph behind)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    quantize_dynamic(
        str(source),
        str(partial),
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
    )
    partial.replace(target)


_BACKEND_CLASSES: dict[str, type[BackendModel]] = {
    "bf16": AutocastModel,
    "compile": CompiledModel,
    "onnx": OnnxModel,
    "int8": Int8Model,
}


GRAPH_BACKENDS = ("onnx", "int8")  # graph runtimes on the CPU over the exported graphs


def load(path_or_id: str | os.PathLike, backend: str = "eager", **kwargs):
    """``fgclip_model.load``: :func:`fgclip_model.auto.load` (any supported checkpoint -> ``(model, processor)``)
    with the feature methods computed by ``backend`` (one of :data:`BACKENDS`). The model stays on the CPU: for
    a GPU, load with ``auto.load``, move the model, then call :func:`with_backend`."""
    from fgclip_model.auto import load as load_eager

    if backend not in CHOICES:  # before reading any weights
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(CHOICES)})")
    model, processor = load_eager(path_or_id, **kwargs)
    return with_backend(model, backend), processor


def pick_backend(device: torch.device | str) -> str:
    """What ``backend="auto"`` runs on ``device``: ``bf16`` where bf16 matmuls are native (CUDA with bf16, CPUs with
    AVX512-BF16 or AMX that oneDNN may use: 1.5-2.5x transformers' eager model on a 2-core AVX512-BF16 EPYC,
    within 1e-4 in cosine), else ``eager``. Without native bf16 no float32 path is much faster: transformers' eager
    model already runs the B/16 image towers at ~80 % of the CPU's float32 matrix-product peak (``tools/perf``
    ``--ceiling``), and the graph runtimes measured 1.0-1.6x, below 1x on some rows of some CPUs. ``compile`` is
    left to an explicit choice (its first batches compile for seconds to a minute), and so is ``int8`` (2.5-4x,
    other embeddings)."""
    return "bf16" if native_bf16(device) else "eager"


def with_backend(model: nn.Module, backend: str = "eager", **options) -> nn.Module:
    """``model`` with its feature methods computed by ``backend`` (one of :data:`CHOICES`; ``auto``: the one
    :func:`pick_backend` chooses for the model's device); ``eager`` returns the model itself. Move the model to its
    device first. ``options``: the backend's own (``onnx``: ``export_dir``, where the graphs are exported or found
    instead of the cache)."""
    if backend not in CHOICES:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(CHOICES)})")
    if backend == AUTO:
        backend = pick_backend(_device(model))
    if backend == "eager":
        return model
    if backend in GRAPH_BACKENDS and _device(model).type != "cpu":
        raise ValueError(f"backend={backend!r} runs a CPU graph runtime: load the model on the CPU")
    return _BACKEND_CLASSES[backend](model.eval(), backend, **options)
