"""Long-CLIP as the text encoder of Stable Diffusion (1.x and SDXL), in the layout diffusers loads as it is.

* :func:`longclip_text_encoder`: a Long-CLIP ``CLIPModel`` -> ``CLIPTextModel`` (248 positions in its config);
* :func:`stretch_text_encoder`: any CLIP text encoder (SDXL's ``CLIPTextModelWithProjection``, bigG) stretched to
  248 positions with Long-CLIP's knowledge-preserving stretch (positions 0..19 kept);
* :func:`long_tokenizer`: a copy of a CLIP tokenizer whose ``model_max_length`` is the new length, so diffusers'
  ``encode_prompt`` (``padding="max_length"``, ``max_length=tokenizer.model_max_length``) gives 248 tokens;
* :func:`use_longclip`: the above applied to an in-memory pipeline (``text_encoder`` replaced, ``text_encoder_2``
  stretched when there is one);
* :func:`export_diffusers`: the same written as ``text_encoder/``, ``tokenizer/`` (and ``text_encoder_2/``,
  ``tokenizer_2/``) folders plus single-file ``.safetensors`` of each encoder.

Nothing here imports diffusers: pipelines are used through their attributes.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .convert import KEEP_POSITIONS, LONG_CONTEXT
from .stretch import stretch_positions

POSITIONS_KEY = "embeddings.position_embedding.weight"
TOWER = "text_model."  # the text tower's key prefix in CLIPModel and in the classic single-file layout
TextEncoder = CLIPTextModel | CLIPTextModelWithProjection


def longclip_text_encoder(model: CLIPModel | CLIPTextModel) -> CLIPTextModel:
    """The text tower of a Long-CLIP ``CLIPModel`` as a ``CLIPTextModel`` (same weights, its 248-row table)."""
    if isinstance(model, CLIPTextModel):
        return model
    if not isinstance(model, CLIPModel):
        raise TypeError(f"expected a Long-CLIP CLIPModel or CLIPTextModel, got {type(model).__name__}")
    config = CLIPTextConfig.from_dict(model.config.text_config.to_dict())
    config.architectures = ["CLIPTextModel"]
    encoder = CLIPTextModel(config).to(model.dtype)
    state = _for_model({k: v for k, v in model.state_dict().items() if k.startswith(TOWER)}, encoder)
    encoder.load_state_dict(state, strict=False)
    _check_loaded(encoder, state)
    return encoder.eval()


def stretch_text_encoder(
    encoder: TextEncoder, new_length: int = LONG_CONTEXT, keep: int = KEEP_POSITIONS
) -> TextEncoder:
    """A new encoder of ``encoder``'s class whose position table is stretched to ``new_length`` rows (Long-CLIP's
    knowledge-preserving stretch: rows ``0..keep-1`` copied, the rest interpolated); the input is not changed."""
    length = encoder.config.max_position_embeddings
    if length == new_length:
        return encoder
    config = copy.deepcopy(encoder.config)
    config.max_position_embeddings = new_length
    state = {k: v for k, v in encoder.state_dict().items() if not k.endswith("position_ids")}
    key = next(k for k in state if k.endswith(POSITIONS_KEY))
    state[key] = stretch_positions(state[key], new_length, keep)
    stretched = type(encoder)(config).to(encoder.dtype)
    stretched.load_state_dict(state, strict=False)
    _check_loaded(stretched, state)
    return stretched.to(encoder.device).eval()


def _classic(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tower keys under ``text_model.`` (transformers 4 / single-file layout); the projection stays top-level."""
    return {k if k.startswith((TOWER, "text_projection")) else TOWER + k: v for k, v in state.items()}


def _for_model(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (classic layout) renamed to ``model``'s own keys (transformers 5 drops ``text_model.`` from
    ``CLIPTextModel``)."""
    prefixed = any(k.startswith(TOWER) for k in model.state_dict())
    return state if prefixed else {k.removeprefix(TOWER): v for k, v in state.items()}


def _check_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    if expected != set(state):
        raise ValueError(
            f"weights do not fit {type(model).__name__}: missing {sorted(expected - set(state))}, "
            f"unexpected {sorted(set(state) - expected)}"
        )


def long_tokenizer(tokenizer, length: int = LONG_CONTEXT):
    """A copy of ``tokenizer`` that pads and truncates to ``length`` tokens (``model_max_length``)."""
    long = copy.deepcopy(tokenizer)
    long.model_max_length = length
    if hasattr(long, "init_kwargs"):
        long.init_kwargs["model_max_length"] = length
    return long


def _default_tokenizer(length: int):
    from .bpe import clip_bpe_tokenizer

    return clip_bpe_tokenizer(length)


def use_longclip(pipe, longclip: CLIPModel | CLIPTextModel, tokenizer=None, keep: int = KEEP_POSITIONS):
    """Make a diffusers Stable Diffusion pipeline (1.x or XL) take prompts of Long-CLIP's length, in place.

    ``pipe.text_encoder`` becomes Long-CLIP's text tower and ``pipe.tokenizer`` a copy of ``tokenizer`` (default:
    the pipeline's own) reaching the same length; an SDXL pipeline's ``text_encoder_2`` is stretched to that length
    with the same stretch and ``tokenizer_2`` follows. Returns ``pipe``.
    """
    encoder = longclip_text_encoder(longclip)
    length = encoder.config.max_position_embeddings
    old = getattr(pipe, "text_encoder", None)
    if old is not None and old.config.hidden_size != encoder.config.hidden_size:
        raise ValueError(
            f"Long-CLIP's text width {encoder.config.hidden_size} does not match the pipeline's text encoder "
            f"({old.config.hidden_size}): Long-CLIP-L fits Stable Diffusion 1.x and SDXL (CLIP ViT-L/14)"
        )
    if old is not None:
        encoder = encoder.to(device=old.device, dtype=old.dtype)
    pipe.text_encoder = encoder
    source = tokenizer if tokenizer is not None else getattr(pipe, "tokenizer", None)
    pipe.tokenizer = long_tokenizer(source if source is not None else _default_tokenizer(length), length)
    if getattr(pipe, "text_encoder_2", None) is not None:
        pipe.text_encoder_2 = stretch_text_encoder(pipe.text_encoder_2, length, keep)
        pipe.tokenizer_2 = long_tokenizer(pipe.tokenizer_2, length)
    return pipe


def save_text_encoder_single_file(encoder: TextEncoder, path: str | os.PathLike) -> Path:
    """One ``.safetensors`` of ``encoder``'s weights (transformers key names, ``text_model.*``), for tools that load
    a text encoder from a single file, in the classic layout (tower keys under ``text_model.``); the metadata records
    the class and the position count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items() if not k.endswith("position_ids")}
    state = _classic(state)
    metadata = {
        "format": "pt",
        "architecture": type(encoder).__name__,
        "max_position_embeddings": str(encoder.config.max_position_embeddings),
    }
    save_file(state, str(path), metadata=metadata)
    return path


@dataclass
class DiffusersExport:
    """What :func:`export_diffusers` wrote: component name -> folder, and encoder name -> single file."""

    folder: Path
    components: dict[str, Path] = field(default_factory=dict)
    single_files: dict[str, Path] = field(default_factory=dict)


def export_diffusers(
    longclip: CLIPModel | CLIPTextModel,
    out_dir: str | os.PathLike,
    tokenizer=None,
    text_encoder_2: TextEncoder | None = None,
    tokenizer_2=None,
    keep: int = KEEP_POSITIONS,
) -> DiffusersExport:
    """Write Long-CLIP as diffusers components under ``out_dir``.

    ``text_encoder/`` + ``tokenizer/`` (``model_max_length`` = the model's positions) load with
    ``CLIPTextModel.from_pretrained(out_dir, subfolder="text_encoder")`` and ``CLIPTokenizer.from_pretrained(...,
    subfolder="tokenizer")`` and go to ``StableDiffusionPipeline.from_pretrained(base, text_encoder=...,
    tokenizer=...)``. With ``text_encoder_2`` (SDXL's second encoder, and its ``tokenizer_2``), the stretched
    ``text_encoder_2/`` + ``tokenizer_2/`` are written too. Each encoder is also saved as
    ``<component>.safetensors`` (:func:`save_text_encoder_single_file`).
    """
    out = Path(out_dir)
    encoder = longclip_text_encoder(longclip)
    length = encoder.config.max_position_embeddings
    parts: dict[str, tuple[TextEncoder, object]] = {
        "text_encoder": (encoder, long_tokenizer(tokenizer or _default_tokenizer(length), length))
    }
    if text_encoder_2 is not None:
        if tokenizer_2 is None:
            raise ValueError("text_encoder_2 needs its tokenizer_2 (SDXL's second tokenizer)")
        parts["text_encoder_2"] = (
            stretch_text_encoder(text_encoder_2, length, keep),
            long_tokenizer(tokenizer_2, length),
        )
    result = DiffusersExport(out)
    for name, (model, tok) in parts.items():
        tokenizer_name = name.replace("text_encoder", "tokenizer")
        model.save_pretrained(out / name)
        tok.save_pretrained(out / tokenizer_name)
        result.components[name] = out / name
        result.components[tokenizer_name] = out / tokenizer_name
        result.single_files[name] = save_text_encoder_single_file(model, out / f"{name}.safetensors")
    return result


def _load_longclip(path: Path, dtype: torch.dtype) -> tuple[CLIPModel, object]:
    """A Long-CLIP ``.pt`` or folder -> (``CLIPModel``, its folder's transformers tokenizer or ``None``)."""
    if path.is_file():
        from .convert import load_longclip_checkpoint

        return load_longclip_checkpoint(path).to(dtype), None
    from transformers import AutoTokenizer

    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist: expected a Long-CLIP .pt file or checkpoint folder")
    model = CLIPModel.from_pretrained(path, dtype=dtype)
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    return model.eval(), AutoTokenizer.from_pretrained(path) if has_tokenizer else None


def export_diffusers_cli(model: str, out_dir: str, base: str | None = None, dtype: str = "float32") -> DiffusersExport:
    """``fgclip-model export diffusers``: load ``model`` (and ``base``'s tokenizers / SDXL second encoder) and
    :func:`export_diffusers` it."""
    from transformers import AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a Long-CLIP .pt file or checkpoint folder)")
    longclip, tokenizer = _load_longclip(path, torch_dtype)
    if longclip.config.text_config.max_position_embeddings <= 77:
        raise ValueError(f"{path} has 77 text positions: not a Long-CLIP model (stretch it with clip_to_longclip)")
    text_encoder_2 = tokenizer_2 = None
    if base is not None:
        base_dir = Path(base)
        if not (base_dir / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{base_dir / 'model_index.json'} does not exist: --base expects a diffusers folder"
            )
        if tokenizer is None and (base_dir / "tokenizer").is_dir():
            tokenizer = AutoTokenizer.from_pretrained(base_dir / "tokenizer")
        width = _text_width(base_dir / "text_encoder")
        if width is not None and width != longclip.config.text_config.hidden_size:
            raise ValueError(
                f"{base_dir}: its text encoder is {width} wide, Long-CLIP's {longclip.config.text_config.hidden_size}"
                " (Long-CLIP-L fits Stable Diffusion 1.x and SDXL)"
            )
        if (base_dir / "text_encoder_2").is_dir():
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(base_dir / "text_encoder_2", dtype=torch_dtype)
            tokenizer_2 = AutoTokenizer.from_pretrained(base_dir / "tokenizer_2")
    return export_diffusers(longclip, out_dir, tokenizer, text_encoder_2, tokenizer_2)


def _text_width(folder: Path) -> int | None:
    import json

    config = folder / "config.json"
    return json.loads(config.read_text()).get("hidden_size") if config.is_file() else None
