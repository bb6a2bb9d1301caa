"""ONNX export of the image and text encoders, checked against PyTorch with ONNX Runtime.

``export_onnx(model, out_dir)`` writes, with torch's dynamo exporter:

* ``image.onnx`` — FG-CLIP: ``pixel_values`` [B, 3, S, S]; FG-CLIP 2: the NaFlex inputs ``pixel_values``
  [B, N, 3·p²], ``pixel_attention_mask`` [B, N], ``spatial_shapes`` [B, 2] with a dynamic patch budget N
  (the position grid is resized inside the graph) -> ``embeds`` [B, D];
* ``text_<walk>.onnx`` for every text walk (``short``, ``box``, ``long``) — ``input_ids`` and
  ``attention_mask`` [B, L] -> ``embeds`` [B, D]. FG-CLIP pools the first EOS, so L is dynamic (up to the walk's
  length); FG-CLIP 2 pools the last position, so L is the walk's length (the processor pads to it);
* ``manifest.json`` (family, graphs, their inputs, the walk lengths) and the processor's files (tokenizer and
  image-processor configs), so an application has everything to prepare inputs.

The embeddings are ``get_image_features`` / ``get_text_features``: L2-normalise them for cosine similarity.
Requires the ``onnx`` extra (``pip install 'fgclip-model[onnx]'``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

WALKS = ("short", "box", "long")


class ImageEncoder(nn.Module):
    """``get_image_features`` as a graph of the processor's image outputs."""

    def __init__(self, model: nn.Module, naflex: bool) -> None:
        super().__init__()
        self.model, self.naflex = model, naflex

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None):
        if self.naflex:
            return self.model.get_image_features(pixel_values, pixel_attention_mask, spatial_shapes)
        return self.model.get_image_features(pixel_values)


class TextEncoder(nn.Module):
    """``get_text_features`` of one walk as a graph of ``input_ids`` and ``attention_mask``."""

    def __init__(self, model: nn.Module, walk: str) -> None:
        super().__init__()
        self.model, self.walk = model, walk

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids, attention_mask, walk_type=self.walk)


@dataclass
class ExportedGraph:
    """One exported encoder: its file, input names and their dynamic axes."""

    file: str
    inputs: dict[str, list[str | int]]
    output: str = "embeds"


@dataclass
class ExportResult:
    folder: Path
    family: str
    graphs: dict[str, ExportedGraph] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def _family(model):
    from fgclip_model.auto import family_of

    try:
        family = family_of(model)
    except ValueError:
        family = None
    if family is None or not family.walks:
        raise ValueError(f"ONNX export covers FG-CLIP and FG-CLIP 2 models, not {type(model).__name__}")
    return family.name, family


def _example_images(model, naflex: bool, patches: int) -> tuple[dict[str, torch.Tensor], dict]:
    vision = model.config.vision_config
    batch = torch.export.Dim("batch", min=1, max=4096)
    if not naflex:
        size = vision.image_size
        example = {"pixel_values": torch.randn(2, 3, size, size)}
        return example, {"pixel_values": {0: batch}}
    side = int(patches**0.5)
    channels = vision.num_channels * vision.patch_size**2
    example = {
        "pixel_values": torch.randn(2, side * side, channels),
        "pixel_attention_mask": torch.ones(2, side * side, dtype=torch.long),
        "spatial_shapes": torch.tensor([[side, side], [side, side]]),
    }
    num = torch.export.Dim("patches", min=4, max=16384)
    return example, {
        "pixel_values": {0: batch, 1: num},
        "pixel_attention_mask": {0: batch, 1: num},
        "spatial_shapes": {0: batch},
    }


def _example_text(length: int, pooled_last: bool, walk: str) -> tuple[dict[str, torch.Tensor], dict]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    ids = torch.randint(4, 100, (2, length))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if pooled_last:  # the walk's length is part of the model (last-position pooling)
        return example, {"input_ids": {0: batch}, "attention_mask": {0: batch}}
    seq = torch.export.Dim(f"{walk}_length", min=2, max=length)
    return example, {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}


def _axes(example: dict[str, torch.Tensor], dynamic: dict) -> dict[str, list[str | int]]:
    """Each input's shape: the name of a dynamic axis, or the size of a fixed one."""
    return {
        name: [
            dynamic.get(name, {}).get(i).__name__ if i in dynamic.get(name, {}) else size
            for i, size in enumerate(t.shape)
        ]
        for name, t in example.items()
    }


def export_onnx(
    model: nn.Module,
    out_dir: str | os.PathLike,
    processor=None,
    opset: int = 18,
    check: bool = True,
    patches: int = 256,
) -> ExportResult:
    """Export ``model``'s image encoder and every text walk to ``out_dir`` (see the module docstring); with
    ``check``, run each graph with ONNX Runtime on its example inputs and record the max abs difference to
    PyTorch (``ExportResult.max_abs_diff``). ``patches``: the example patch budget of FG-CLIP 2 (any works)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx extra: pip install 'fgclip-model[onnx]'") from err
    from fgclip_model.auto import text_lengths

    model = model.eval().float()
    family_name, family = _family(model)
    naflex = family.naflex
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out, family_name)
    jobs: list[tuple[str, nn.Module, dict, dict]] = []
    example, dynamic = _example_images(model, naflex, patches)
    jobs.append(("image", ImageEncoder(model, naflex), example, dynamic))
    for walk, length in text_lengths(model).items():
        example, dynamic = _example_text(length, pooled_last=naflex, walk=walk)
        jobs.append((f"text_{walk}", TextEncoder(model, walk), example, dynamic))
    for name, module, example, dynamic in jobs:
        module.eval()
        file = out / f"{name}.onnx"
        program = torch.onnx.export(
            module,
            kwargs=example,
            dynamic_shapes=dynamic,
            input_names=list(example),
            output_names=["embeds"],
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
        program.save(str(file))
        result.graphs[name] = ExportedGraph(file.name, _axes(example, dynamic))
        if check:
            result.max_abs_diff[name] = _check(module, example, file)
    manifest = {
        "family": family_name,
        "walk_lengths": text_lengths(model),
        "graphs": {k: vars(v) for k, v in result.graphs.items()},
        "max_abs_diff_vs_pytorch": result.max_abs_diff,
        "note": "embeds are get_image_features / get_text_features: L2-normalise them for cosine similarity",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if processor is not None:
        processor.save_pretrained(out)
    return result


def run_onnx(file: str | os.PathLike, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run an exported graph with ONNX Runtime (CPU) on ``inputs`` (only the names the graph takes are used)."""
    import onnxruntime as ort

    return run_session(ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]), inputs)


def run_session(session, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run an ONNX Runtime session on the tensors of ``inputs`` it takes (cast to the graph's input types)."""
    feed = {i.name: inputs[i.name].cpu().numpy().astype(ONNX_TYPES[i.type]) for i in session.get_inputs()}
    return torch.from_numpy(session.run(None, feed)[0])


ONNX_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


@torch.no_grad()
def _check(module: nn.Module, example: dict[str, torch.Tensor], file: Path) -> float:
    expected = module(**example)
    return float((run_onnx(file, example) - expected).abs().max())
