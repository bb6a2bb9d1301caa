"""Strict checkpoint loading shared by the fgclip model classes, and a header check of safetensors files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

SAFETENSORS_HEADER_LIMIT = 100_000_000  # bytes: what the safetensors format itself accepts


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` when it is not a complete safetensors file: shorter than its header
    length field, a header over the format's 100 MB limit or not JSON, or tensors past the end of the file
    (a truncated download). Reads only the header."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes); download it again")
        length = int.from_bytes(head, "little")
        if length > SAFETENSORS_HEADER_LIMIT:
            raise ValueError(f"{path}: safetensors header of {length} bytes, over the format's limit: not a valid file")
        if 8 + length > size:
            raise ValueError(f"{path}: truncated safetensors file (header of {length} bytes, file of {size})")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{path}: the safetensors header is not valid JSON: not a valid file") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a mapping: not a valid file")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: malformed safetensors header (tensor entries without data_offsets)") from err
    if 8 + length + end > size:
        raise ValueError(
            f"{path}: truncated safetensors file (its header describes {8 + length + end} bytes, the file has "
            f"{size}); download it again"
        )


def check_checkpoint_files(folder: str | os.PathLike) -> None:
    """:func:`check_safetensors` on every ``*.safetensors`` of a checkpoint folder."""
    for file in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(file)


def unsupported_global(err: Exception) -> str:
    """`` (it asks for <module.Class>)`` from torch's weights-only refusal of a pickle, or ``""``."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return f" (it asks for {match.group(1)})" if match else ""


class GuardedInitMixin:
    """Initialise composite modules too (text tables, attention and MLP blocks, the vision embeddings).

    transformers skips ``_init_weights`` for modules without direct parameters when a model is not one of its own
    (it cannot know that custom code uses its guarded initialisers), so a fresh FG-CLIP kept torch's defaults
    there (token tables N(0, 1), default linears). Every ``_init_weights`` of fgclip uses
    ``transformers.initialization``, whose functions skip tensors loaded from a checkpoint, so visiting those
    modules is safe: only missing weights are initialised.
    """

    def _initialize_weights(self, module, is_custom_code: bool = False):
        super()._initialize_weights(module, is_custom_code=False)


def nested_tuple(output) -> tuple:
    """``output.to_tuple()`` with the nested tower outputs as tuples too (``forward(return_dict=False)``)."""
    from transformers.utils import ModelOutput

    return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in ModelOutput.to_tuple(output))


class AttentionSelectionMixin:
    """transformers' attention selection (``attn_implementation=`` at load, ``set_attn_implementation``) for
    composite models whose towers are plain modules: the choice is mirrored into the tower configs, which the
    attention layers read at each call (transformers only sets sub-configs of sub-models it can see)."""

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True  # every attention layer goes through fgclip_model.layers.attention_function

    def post_init(self) -> None:
        super().post_init()
        self._mirror_attn_implementation()

    def set_attn_implementation(self, attn_implementation, *args, **kwargs) -> None:
        if isinstance(attn_implementation, str):  # validate, then set the towers: no "set in the dark" warnings
            attn_implementation = self._check_and_adjust_attn_implementation(attn_implementation, is_init_check=False)
            for sub in self.config.sub_configs:
                getattr(self.config, sub)._attn_implementation_internal = attn_implementation
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        self._mirror_attn_implementation()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value) -> None:
        self.text_model.embeddings.token_embedding = value

    def _output_flags(self, output_hidden_states: bool | None, output_attentions: bool | None) -> tuple[bool, bool]:
        """Call flags, else the config's (transformers' convention)."""
        hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return bool(hidden), bool(attentions)

    def _mirror_attn_implementation(self) -> None:
        chosen = self.config._attn_implementation
        for sub in self.config.sub_configs:
            config = getattr(self.config, sub, None)
            if config is not None and config._attn_implementation is None:
                config._attn_implementation_internal = chosen


class StrictLoadingMixin:
    """``from_pretrained`` that fails on missing or mis-shaped weights (``strict=True``, the default).

    transformers would otherwise initialise a missing tensor at random and only log a warning. Keys listed in
    ``_keys_to_ignore_on_load_missing`` stay optional (they are initialised as documented by the model).
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        if Path(pretrained_model_name_or_path).is_dir():
            check_checkpoint_files(pretrained_model_name_or_path)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except RuntimeError as err:
            if "ignore_mismatched_sizes" not in str(err):
                raise
            raise ValueError(
                f"{pretrained_model_name_or_path} holds weights whose shapes do not fit {cls.__name__} with its "
                "config.json (the loading report above names them)"
            ) from err
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing: {sorted(info['missing_keys'])}")
        if info.get("mismatched_keys"):
            problems.append(f"mis-shaped: {sorted(info['mismatched_keys'])}")
        if strict and problems:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a complete {cls.__name__} checkpoint ("
                + "; ".join(problems)
                + "). Pass strict=False to initialise them instead."
            )
        return (model, info) if want_info else model
