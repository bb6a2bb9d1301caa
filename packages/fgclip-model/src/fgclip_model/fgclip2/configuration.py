"""Configuration of FG-CLIP 2 (``model_type: "fgclip2"``): SigLIP 2 NaFlex plus the long-text geometry."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig


@strict
class FGCLIP2TextConfig(Siglip2TextConfig):
    r"""The FG-CLIP 2 text tower: every SigLIP 2 text field, plus

    Attributes:
        keep_len (`int`, defaults to 20): leading positions of long text read from ``position_embedding_ori``.
        longtext_len (`int`, defaults to 196): rows of the two long position tables — the longest long text.
        max_position_embeddings (`int`, defaults to 64): rows of the short table (short and box text).
        projection_size (`int`): output width of ``text_model.head`` (short walk); defaults to ``hidden_size``.
        padding_side (`str`, defaults to "right"): where the padding of the text the tower was trained on lies.
            The tower pools the last position: a pad token (that attends to the real ones) for "right", as the
            released checkpoints, the end-of-text token for "left", as models trained from scratch on a
            left-padding word-level tokenizer. Text given with an attention mask is laid out this way first, so its
            features do not depend on how the caller padded it.

    ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id`` are unused by the model (the reference inherits CLIP's
    ids, which do not exist in the Gemma vocabulary) and default to ``None``: the checkpoint's tokenizer decides.
    """

    model_type = "fgclip2_text_model"
    base_config_key = "text_config"

    keep_len: int = 20
    longtext_len: int = 196
    padding_side: str = "right"
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def validate_padding_side(self) -> None:
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")


@strict
class FGCLIP2VisionConfig(Siglip2VisionConfig):
    r"""The FG-CLIP 2 vision tower: SigLIP 2 NaFlex unchanged (``num_patches`` is the G×G position grid,
    ``patch_size`` the patch side; images arrive as padded patch sequences)."""

    model_type = "fgclip2_vision_model"
    base_config_key = "vision_config"


# how fresh weights are initialised when training from scratch: read at construction, not saved with a checkpoint
CONSTRUCTION_OPTIONS = ("dense_head_init", "position_init", "attention_init")


@strict
class FGCLIP2Config(Siglip2Config):
    r"""FG-CLIP 2: ``text_config`` (:class:`FGCLIP2TextConfig`), ``vision_config`` (:class:`FGCLIP2VisionConfig`).

    Attributes:
        initializer_factor (`float`, defaults to 1.0): scale of the random initialisation.
        extra_logit_scale_init (`float`, defaults to ln 100 = 4.6052): initial value of the region and
            hard-negative temperatures (``logit_scale_finegraind``, ``logit_scale_hardneg``) when a checkpoint
            does not carry them (the reference trainer attaches them at this value).
        dense_head_init (`str`, defaults to "random"): initialisation of a dense-feature head that a checkpoint
            does not provide. "random" is SigLIP's (as the reference): every patch then starts as a near-uniform
            mix of all patches, so region features begin alike for every box. "local" sets the head's query,
            key, value and output projections to the identity, query and key scaled by sqrt(3), so that at the
            start each patch attends mostly to itself and to patches like it: region features begin as the
            backbone's own tokens under the box (for models trained from scratch).
        position_init (`str`, defaults to "normal"): initialisation of a vision position grid that a checkpoint
            does not provide. "normal" is SigLIP's (std 0.02, about twenty times weaker than a patch's content
            embedding, so where a patch is reaches later layers only after much training). "sincos" sets the
            G×G grid to 2-D sine-cosine features (half the channels code the row, half the column, at
            geometrically spaced frequencies), so every token knows its place from the first step (for models
            trained from scratch).
        attention_init (`str`, defaults to "xavier"): initialisation of the vision tower's self-attention layers
            that a checkpoint does not provide. "xavier" is SigLIP's. "mimetic" is the mimetic initialisation of
            Trockman & Kolter (2023, "Mimetic Initialization of Self-Attention Layers"): each head's query-key
            product starts near ``0.7·Z + 0.7·I`` and each layer's value-output product near ``0.4·Z − 0.4·I``
            (``Z`` random, ``I`` the identity), the structure attention layers of trained ViTs show — tokens
            attend to tokens like them, nearby ones first with sine-cosine positions — so a small ViT trained
            from scratch learns local structure (an object's shape and extent) in far fewer steps.

    ``dense_head_init``, ``position_init`` and ``attention_init`` only decide how a model built from this config
    initialises weights that no checkpoint provides (training from scratch): they are construction options, never
    written to ``config.json`` (:data:`CONSTRUCTION_OPTIONS`). A ``config.json`` that holds them (checkpoints saved
    before) still loads.
    """

    model_type = "fgclip2"
    sub_configs_defaults = {"vision_config": FGCLIP2VisionConfig, "text_config": FGCLIP2TextConfig}

    extra_logit_scale_init: float = 4.6052
    dense_head_init: str = "random"
    position_init: str = "normal"
    attention_init: str = "xavier"

    def to_dict(self) -> dict:
        """The serialisable settings: everything but the :data:`CONSTRUCTION_OPTIONS`."""
        out = super().to_dict()
        for key in CONSTRUCTION_OPTIONS:
            out.pop(key, None)
        return out

    def validate_dense_head_init(self) -> None:
        if self.dense_head_init not in ("random", "local"):
            raise ValueError(f"dense_head_init must be 'random' or 'local', got {self.dense_head_init!r}")

    def validate_position_init(self) -> None:
        if self.position_init not in ("normal", "sincos"):
            raise ValueError(f"position_init must be 'normal' or 'sincos', got {self.position_init!r}")

    def validate_attention_init(self) -> None:
        if self.attention_init not in ("xavier", "mimetic"):
            raise ValueError(f"attention_init must be 'xavier' or 'mimetic', got {self.attention_init!r}")


def fgclip2_config_from_siglip2(siglip2_config) -> FGCLIP2Config:
    """An FG-CLIP 2 config with the geometry of a SigLIP 2 (NaFlex) config (``keep_len``/``longtext_len`` default)."""
    data = siglip2_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        data.pop(key, None)
    for sub in ("text_config", "vision_config"):
        data[sub] = {k: v for k, v in data[sub].items() if k not in ("model_type", "transformers_version")}
    return FGCLIP2Config(**data)
