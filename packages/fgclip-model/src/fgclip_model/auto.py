"""Registration with the transformers Auto classes, and :func:`load` (family detection from ``config.json``).

FG-CLIP v1 checkpoints say ``model_type: "clip"`` like every OpenAI CLIP, so that family is told apart by
``architectures``: for ``CLIPConfig`` the Auto mapping holds ``(CLIPModel, FGCLIPModel)`` and transformers picks
the class named in ``architectures`` — plain CLIP checkpoints keep loading as ``CLIPModel``. FG-CLIP 2 has its
own ``model_type: "fgclip2"``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    Siglip2Model,
)

from fgclip_model.fgclip import FGCLIPConfig, FGCLIPModel
from fgclip_model.fgclip.processing import FGCLIPProcessor
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model, FGCLIP2TextConfig, FGCLIP2VisionConfig
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor, Fgclip2ImageProcessor
from fgclip_model.fgclip2.processing import FGCLIP2Processor
from fgclip_model.loading import check_checkpoint_files, unsupported_global
from fgclip_model.longclip import LONG_CONTEXT, load_longclip_checkpoint, read_state_dict
from fgclip_model.longclip.processing import LongCLIPProcessor

_registered = False
IMAGE_BACKENDS = ("torchvision", "pil")  # transformers 5's image-processor backend names


def register_auto_classes() -> None:
    """Make ``AutoModel`` / ``AutoConfig`` / ``AutoImageProcessor`` / ``AutoProcessor`` (and the Hub READMEs'
    ``AutoModelForCausalLM``) load fgclip checkpoints without ``trust_remote_code``, and transformers'
    ``zero-shot-image-classification`` pipeline (``AutoModelForZeroShotImageClassification``) run them.
    Idempotent; called on ``import fgclip_model``."""
    global _registered
    if _registered:
        return
    for auto in (AutoModel, AutoModelForZeroShotImageClassification):
        auto._model_mapping.register(CLIPConfig, (CLIPModel, FGCLIPModel), exist_ok=True)
        auto._model_mapping.register(FGCLIPConfig, FGCLIPModel, exist_ok=True)  # from_config(FGCLIPConfig(...))
    AutoModelForCausalLM._model_mapping.register(CLIPConfig, (FGCLIPModel,), exist_ok=True)
    AutoModelForZeroShotImageClassification.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)

    for config in (FGCLIP2Config, FGCLIP2TextConfig, FGCLIP2VisionConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)
    AutoModelForCausalLM.register(FGCLIP2Config, FGCLIP2Model, exist_ok=True)
    # FG-CLIP 2 has one image processor (PIL resampling, the reference's pixels). transformers 5 asks for the
    # "torchvision" backend whenever torchvision is installed and, finding only "pil", logs a fallback warning on
    # every load: the same class answers both backend names.
    for config, processor in ((FGCLIP2Config, FGCLIP2ImageProcessor), (FGCLIP2VisionConfig, Fgclip2ImageProcessor)):
        classes = dict.fromkeys(IMAGE_BACKENDS, processor)
        AutoImageProcessor.register(config, image_processor_classes=classes, exist_ok=True)
    AutoProcessor.register(FGCLIP2Config, FGCLIP2Processor, exist_ok=True)
    _registered = True


@dataclass(frozen=True)
class ModelFamily:
    """A model family's descriptor: its name, how to recognise its ``config.json``, which classes load it, and what
    its models can do. The one object every registry refers to: ``load()`` here, the training families of
    fgclip-train and the evaluation protocols of fgclip-eval are keyed by it (:func:`register_model_family`).

    Every family takes the processor's image outputs as keywords (``model.get_image_features(**inputs)``); the
    capabilities say the rest, so callers never branch on a family's name:

    * ``regions``: ``get_image_region_features(**inputs, boxes=[normalised xyxy per image])`` and
      ``get_image_dense_features(**inputs)`` exist;
    * ``naflex``: images are NaFlex patch sequences (``pixel_attention_mask``, ``spatial_shapes``) with a patch
      budget (``max_num_patches``), not fixed squares;
    * ``walks``: ``get_text_features`` takes ``walk_type`` (``short`` / ``box`` / ``long``) and returns a tensor;
      otherwise (transformers' CLIP and SigLIP 2) it takes none and returns a model output.
    """

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    model_class: type
    processor_class: type
    from_file: Callable | None = None  # loads a single checkpoint file (an original ``.pt``) into ``model_class``
    regions: bool = False
    naflex: bool = False
    walks: bool = False
    dense_walk: str = "short"  # the text walk whose space the dense (patch) features share


def _load_state_dict_file(path, new_length: int | None, **kwargs):
    """An original ``.pt`` state dict as a ``CLIPModel``: Long-CLIP's at ``new_length`` positions, or (``None``) at
    the file's own table (an OpenAI state dict keeps its 77 positions)."""
    model = load_longclip_checkpoint(path, new_length=new_length)
    return model.to(kwargs["dtype"]) if kwargs.get("dtype") else model


# the small registry behind load(): the first family whose architectures (or model type) match wins
FAMILIES: dict[str, ModelFamily] = {}


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Make ``family`` known to :func:`load` / :func:`detect_family` (and so to every registry keyed by it).
    Registering a name again replaces its descriptor. Returns ``family``."""
    FAMILIES[family.name] = family
    return family


def family_of(model) -> ModelFamily:
    """The descriptor of a loaded model (or of the eager model a backend wraps, ``model.model``): the first family
    whose ``model_class`` is its class (Long-CLIP and CLIP share ``CLIPModel``: ``longclip`` answers for both)."""
    for candidate in (model, getattr(model, "model", None)):
        for family in FAMILIES.values():
            if type(candidate) is family.model_class:
                return family
    raise ValueError(f"{type(model).__name__} is not the model class of a registered family")


def get_model_family(name: str) -> ModelFamily:
    """The descriptor registered as ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


for _family in (
    ModelFamily("fgclip", ("FGCLIPModel",), (), FGCLIPModel, FGCLIPProcessor, regions=True, walks=True),
    ModelFamily(
        "fgclip2",
        ("FG_CLIP2_Model", "Fgclip2Model", "FGCLIP2Model"),
        ("fgclip2",),
        FGCLIP2Model,
        FGCLIP2Processor,
        regions=True,
        naflex=True,
        walks=True,
        dense_walk="box",
    ),
    # a CLIPModel with Long-CLIP's stretched text positions (248, or longer; converted, or fine-tuned by
    # fgclip-longclip), or an original longclip-*.pt: Long-CLIP's own resize + centre crop and BPE
    ModelFamily(
        "longclip", (), (), CLIPModel, LongCLIPProcessor, partial(_load_state_dict_file, new_length=LONG_CONTEXT)
    ),
    ModelFamily("clip", (), ("clip",), CLIPModel, FGCLIPProcessor, partial(_load_state_dict_file, new_length=None)),
    # plain SigLIP 2 (NaFlex), the baseline FG-CLIP 2 starts from: same image processor, one 64-token text walk
    ModelFamily("siglip2", ("Siglip2Model",), ("siglip2",), Siglip2Model, FGCLIP2Processor, naflex=True),
):
    register_model_family(_family)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin")


def resolve(path_or_id: str | os.PathLike) -> Path:
    """A local checkpoint folder or ``.pt`` file as it is; otherwise a Hugging Face hub id (``qihoo360/fg-clip2-base``)
    resolved as transformers does, through ``huggingface_hub`` and its local cache (the cache alone when offline)."""
    path = Path(path_or_id)
    if path.exists():
        return path
    name = str(path_or_id)
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or name.endswith(CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"{name} does not exist (expected a checkpoint folder, a .pt file or a hub id)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise FileNotFoundError(
            f"{name} is neither a local path nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), and it could "
            f"not be downloaded ({type(err).__name__}); download it where there is a network "
            f"(`hf download {name}`) or pass a local folder"
        ) from err


def _file_family(path: Path) -> str:
    rows = read_state_dict(path)["positional_embedding"].shape[0]
    return "clip" if rows == 77 else "longclip"


def detect_family(path: str | os.PathLike) -> str:
    """The model family of a checkpoint folder (from its ``config.json``) or of an original ``.pt`` file."""
    path = Path(path)
    if path.is_file():
        return _file_family(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: expected a checkpoint folder saved by save_pretrained")
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON ({err})") from err
    architectures = config.get("architectures") or []
    for name, family in FAMILIES.items():
        if any(a in family.architectures for a in architectures):
            return name
    if config.get("model_type") == "clip" and (config.get("text_config") or {}).get("max_position_embeddings", 77) > 77:
        return "longclip"  # CLIP's 77 positions stretched (248 as the paper, or longer)
    for name, family in FAMILIES.items():
        if config.get("model_type") in family.model_types:
            return name
    raise ValueError(
        f"{config_file}: architectures {architectures} / model_type {config.get('model_type')!r} is not a known "
        f"family (known: {', '.join(FAMILIES)})"
    )


def load(path_or_id: str | os.PathLike, **kwargs):
    """Load a checkpoint of any supported family: returns ``(model, processor)`` with the model in eval mode.

    ``path_or_id``: a folder saved by ``save_pretrained``, an original Long-CLIP / OpenAI CLIP ``.pt`` state dict
    (read with ``weights_only``), or a hub id resolved through the Hugging Face cache. The processor holds the
    folder's tokenizer (``None`` when it has none) and image processor (the family's defaults when absent).
    Long-CLIP models get Long-CLIP's own preprocessing and tokenizer; other plain CLIP folders get FG-CLIP's
    processor, which squashes images to the model's square size instead of centre-cropping them. Extra keyword
    arguments go to ``from_pretrained`` (e.g. ``dtype``). ``fgclip_model.load`` adds the ``backend`` switch.
    """
    path = resolve(path_or_id)
    family = FAMILIES[detect_family(path)]
    if path.is_dir():
        check_checkpoint_files(path)  # a truncated or forged file is one clear error, before transformers reads it
    try:
        if path.is_file():
            if family.from_file is None:
                raise ValueError(f"{path}: a single-file checkpoint of this family cannot be loaded; pass its folder")
            model = family.from_file(path, **kwargs)
        else:
            model = family.model_class.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as err:  # a pickled (.bin / .pt) weight file asking for more than tensors
        why = unsupported_global(err)
        raise ValueError(
            f"{path}: refused, a weight file holds objects that only code execution could rebuild{why} (weights load "
            "with weights_only=True); use a safetensors copy of the checkpoint"
        ) from err
    image_size = getattr(model.config.vision_config, "image_size", None)
    processor = family.processor_class.from_pretrained(path, image_size=image_size, max_lengths=text_lengths(model))
    return model.eval(), processor


def text_lengths(model) -> dict[str, int]:
    """Token budget of each text walk, read from the model's position tables."""
    text = model.config.text_config
    short = text.max_position_embeddings
    if hasattr(model.config, "long_max_position_embeddings"):  # FG-CLIP v1
        long = model.config.long_max_position_embeddings
    else:  # FG-CLIP 2 (longtext_len) or plain / Long-CLIP (one table)
        long = getattr(text, "longtext_len", short)
    return {"short": short, "box": short, "long": long}
