"""FG-CLIP 2: SigLIP 2 NaFlex with long-text / box-text heads, a dense-feature head and region features.

Checkpoint compatible with the reference ``Fgclip2Model`` / ``FG_CLIP2_Model`` state-dict layout.
Differences from the reference code (its bugs, fixed):

* long text of any length up to 196 tokens, short / box up to 64, clear errors beyond;
* the attention-pooling heads and the text heads run batched (the reference loops per sample);
* dense features use SDPA with a key-padding mask instead of a materialised [B·heads, N, N] additive mask;
* region features of a whole batch go through one RoIAlign call;
* the pooled text path runs the last text block at the last position only (the one state it reads);
* the stage-2 losses are explicit, guarded terms (no bare ``try/except`` dropping them), need no process group
  and never cast to bf16 by themselves.

The text tower pools the hidden state at the **last position**, as the released weights were trained: pad text
to the walk's maximum length (64 / 196) — :class:`FGCLIP2Processor` does by default — to get the trained
behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from fgclip_model.distributed import all_reduce_mean, gather_with_grad
from fgclip_model.layers import MLP, Encoder, WalkTextEmbeddings, encode_unique, pack_tokens
from fgclip_model.loading import (
    AttentionSelectionMixin,
    GuardedInitMixin,
    StrictLoadingMixin,
    nested_tuple,
)
from fgclip_model.losses import (
    fgclip2_hard_negative_terms,
    masked_contrastive_loss,
    normalize,
    sigmoid_loss,
    text_intra_contrastive_loss,
)
from fgclip_model.regions import check_boxes, normalized_rois, roi_features
from fgclip_model.stage2 import LossWeights, ParsedBatch, Stage2Inputs, Stage2Losses

from .configuration import FGCLIP2Config, FGCLIP2TextConfig, FGCLIP2VisionConfig, fgclip2_config_from_siglip2

WALK_TYPES = ("short", "box", "long")


# Gemma's <pad>, what FG-CLIP 2's processor pads with (config.pad_token_id is SigLIP's, unused by the model)
PAD_ID = 0


def _check_walk(walk_type: str) -> str:
    if walk_type not in WALK_TYPES:
        raise ValueError(f"walk_type must be one of {WALK_TYPES}, got {walk_type!r}")
    return walk_type


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, L] keep-mask (1 = real) -> boolean SDPA mask [B, 1, 1, L] on the key axis."""
    return None if mask is None else mask.bool()[:, None, None, :]


# ------------------------------------------------------------------------------------------------ pooling heads


class MultiheadAttentionPoolingHead(nn.Module):
    """SigLIP's attention-pooling head (``probe``, ``attention``, ``layernorm``, ``mlp``), batched.

    ``attention`` keeps ``nn.MultiheadAttention``'s packed parameters (checkpoint keys ``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), but runs through SDPA with a key-padding mask.
    """

    def __init__(self, config: FGCLIP2VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.probe = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def attend(self, queries: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Multi-head attention of ``queries`` [B, Q, D] over ``tokens`` [B, N, D] (mask [B, N], 1 = real)."""
        attn = self.attention
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        b, q_len, dim = queries.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, x.shape[1], self.num_heads, dim // self.num_heads).transpose(1, 2)

        q = heads(F.linear(queries, w_q, b_q))
        k = heads(F.linear(tokens, w_k, b_k))
        v = heads(F.linear(tokens, w_v, b_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_key_mask(mask))
        return attn.out_proj(out.transpose(1, 2).reshape(b, q_len, dim))

    def refine(self, attended: torch.Tensor) -> torch.Tensor:
        return attended + self.mlp(self.layernorm(attended))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool [B, N, D] tokens into [B, D] with the learned probe."""
        probe = self.probe.expand(tokens.shape[0], -1, -1)
        return self.refine(self.attend(probe, tokens, mask))[:, 0]

    def dense(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Every token queries all real tokens (the probe is unused): [B, N, D] -> [B, N, D]."""
        return self.refine(self.attend(tokens, tokens, mask))


# ------------------------------------------------------------------------------------------------- vision tower


def antialias_weights(index: torch.Tensor, size: torch.Tensor, source: int) -> torch.Tensor:
    """Weights [..., source] of the antialiased bilinear resize (PyTorch's ``antialias=True``, align_corners
    False) that give output row ``index`` of an axis of ``size`` rows from ``source`` rows: a triangle filter
    centred at ``(index + 0.5)·scale`` (``scale = source / size``), ``max(scale, 1)`` rows wide, normalised."""
    scale = source / size.to(torch.float32)
    support = scale.clamp(min=1.0)
    center = (index.to(torch.float32) + 0.5) * scale
    taps = torch.arange(source, device=index.device, dtype=torch.float32) + 0.5
    weights = (1.0 - ((taps - center[..., None]).abs() / support[..., None])).clamp(min=0.0)
    return weights / weights.sum(-1, keepdim=True)


def resize_position_grid(grid: torch.Tensor, spatial_shapes: torch.Tensor, length: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a [G, G, D] position grid to each image's (h, w) patch grid.

    Returns [B, length, D]: rows ``0..h·w-1`` in row-major order, the padding rows repeating row 0 (as SigLIP 2).
    Equal to ``F.interpolate(..., mode="bilinear", antialias=True)`` per image, written as two weight matrices
    per patch row so it needs no per-shape loop or host sync (and exports to ONNX with dynamic shapes).
    """
    side = grid.shape[0]
    h, w = spatial_shapes[:, :1].to(grid.device), spatial_shapes[:, 1:].to(grid.device)  # [B, 1]
    n = torch.arange(length, device=grid.device)[None, :]  # [1, length]
    real = n < h * w
    n = torch.where(real, n, torch.zeros_like(n))  # padding rows take row 0's position
    row_weights = antialias_weights(n // w, h.expand_as(n), side)  # [B, length, G]
    col_weights = antialias_weights(n % w, w.expand_as(n), side)
    return torch.einsum("bng,bnk,gkd->bnd", row_weights, col_weights, grid.float()).to(grid.dtype)


def sincos_grid(side: int, width: int) -> torch.Tensor:
    """[side·side, width] 2-D sine-cosine position features, row-major: the first half of the channels codes the
    row, the second half the column, each as sines and cosines at ``width // 4`` geometric frequencies."""
    if width % 4:
        raise ValueError(f"sincos position features need a width divisible by 4, got {width}")
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)[:, None] * frequencies[None, :]  # [side, quarter]
    code = torch.cat([coords.sin(), coords.cos()], dim=1)  # [side, width / 2]
    rows = code[:, None, :].expand(side, side, -1)
    cols = code[None, :, :].expand(side, side, -1)
    return torch.cat([rows, cols], dim=-1).reshape(side * side, width).float()


MIMETIC_QK = (0.7, 0.7)  # (α, β) of the query-key product α·Z + β·I (Trockman & Kolter, ViT-Tiny setting)
MIMETIC_VO = (0.4, 0.4)  # (α, β) of the value-output product α·Z − β·I


def mimetic_factors(width: int, rank: int, alpha: float, beta: float, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [width, rank] factors A, B with A·Bᵀ the best rank-``rank`` approximation of ``α·Z + sign·β·I``
    (``Z`` ~ N(0, 1/width), drawn from torch's generator): the mimetic initialisation of an attention product."""
    target = alpha * torch.randn(width, width, dtype=torch.float64) / width**0.5
    target += sign * beta * torch.eye(width, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (vh[:rank].T * root).float()


def mimetic_attention_weights(width: int, heads: int) -> dict[str, torch.Tensor]:
    """``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` weights (nn.Linear layout, [out, in]) of one attention
    layer at the mimetic initialisation: per head ``W_q W_kᵀ ≈ 0.7·Z + 0.7·I``, per layer
    ``W_v W_o ≈ 0.4·Z − 0.4·I``."""
    head_dim = width // heads
    q_rows, k_rows = [], []
    for _ in range(heads):
        w_q, w_k = mimetic_factors(width, head_dim, *MIMETIC_QK, sign=1.0)
        q_rows.append(w_q.T)
        k_rows.append(w_k.T)
    w_v, w_o = mimetic_factors(width, width, *MIMETIC_VO, sign=-1.0)  # x·W_v·W_o, so out_proj.weight = W_oᵀ
    return {"q_proj": torch.cat(q_rows), "k_proj": torch.cat(k_rows), "v_proj": w_v.T, "out_proj": w_o}


class FGCLIP2VisionEmbeddings(nn.Module):
    """Linear patch embedding of pre-patchified pixels + the position grid resized per image."""

    def __init__(self, config: FGCLIP2VisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Linear(config.num_channels * config.patch_size**2, config.hidden_size)
        self.position_embedding = nn.Embedding(config.num_patches, config.hidden_size)
        self.grid = math.isqrt(config.num_patches)

    def forward(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        grid = self.position_embedding.weight.reshape(self.grid, self.grid, -1)
        return patches + resize_position_grid(grid, spatial_shapes, pixel_values.shape[1])


class FGCLIP2VisionTransformer(nn.Module):
    """NaFlex ViT (checkpoint prefix ``vision_model``): embeddings, encoder, ``post_layernorm``, MAP ``head``."""

    def __init__(self, config: FGCLIP2VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = FGCLIP2VisionEmbeddings(config)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = MultiheadAttentionPoolingHead(config) if config.vision_use_head else None

    def forward(
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        """Post-LN patch tokens [B, N, D] (rows past h·w are padding)."""
        return self.encode(pixel_values, pixel_attention_mask, spatial_shapes).last_hidden_state

    def encode(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None,
        spatial_shapes: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutput:
        """The tower's outputs: post-LN tokens, and per-layer hidden states / attention weights when asked."""
        hidden = self.embeddings(pixel_values, spatial_shapes)
        out = self.encoder(
            hidden,
            attn_mask=_key_mask(pixel_attention_mask),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return BaseModelOutput(self.post_layernorm(out.last_hidden_state), out.hidden_states, out.attentions)


# --------------------------------------------------------------------------------------------------- text tower


class FGCLIP2TextTransformer(nn.Module):
    """Bidirectional text transformer pooled at the last position (checkpoint prefix ``text_model``)."""

    def __init__(self, config: FGCLIP2TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = WalkTextEmbeddings(
            config.vocab_size, config.hidden_size, config.max_position_embeddings, config.longtext_len, config.keep_len
        )
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, walk_type: str = "short"
    ) -> torch.Tensor:
        """The final-LN hidden state at the last position [B, D] (no head: the caller picks it by walk). Only that
        position is read, so the last block computes it alone (every position still attends in the blocks before
        and serves as key and value in the last): the same state as :meth:`encode`'s ``pooler_output``."""
        mask = _key_mask(attention_mask)
        hidden = self.embeddings(input_ids, walk_type)
        *blocks, last = self.encoder.layers
        if blocks:
            hidden = self.encoder(hidden, attn_mask=mask, layers=slice(0, -1)).last_hidden_state
        return self.final_layer_norm(last.at_positions(hidden, slice(-1, None), mask)[:, 0])

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        walk_type: str = "short",
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        """The tower's outputs: final-LN states, the last position as ``pooler_output`` (before the walk's head),
        and per-layer hidden states / attention weights when asked."""
        out = self.encoder(
            self.embeddings(input_ids, walk_type),
            attn_mask=_key_mask(attention_mask),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last = self.final_layer_norm(out.last_hidden_state)
        return BaseModelOutputWithPooling(last, last[:, -1], out.hidden_states, out.attentions)


# ------------------------------------------------------------------------------------------------------ outputs


@dataclass
class FGCLIP2Output(ModelOutput):
    """Inference forward: SigLIP logits ``exp(s)·cos + b``, the normalised embeddings and the towers' outputs."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return nested_tuple(self)


@dataclass
class FGCLIP2Stage2Output(ModelOutput):
    """``compute_loss``: the weighted total, every term unweighted, and the rank margin for the next step."""

    loss: torch.Tensor | None = None
    loss_long: torch.Tensor | None = None
    loss_short: torch.Tensor | None = None
    loss_region: torch.Tensor | None = None
    loss_tic: torch.Tensor | None = None
    loss_hard: torch.Tensor | None = None
    loss_hard_itc: torch.Tensor | None = None
    loss_hard_pair: torch.Tensor | None = None
    loss_hard_rank: torch.Tensor | None = None
    hard_margin: torch.Tensor | None = None


@dataclass
class _Stage2Features:
    """What :meth:`FGCLIP2Model.compute_loss` encodes once per step (normalised embeddings)."""

    image: torch.Tensor  # [B, D]
    shapes: torch.Tensor  # [B, 2] patch grid of every image
    maps: torch.Tensor | None  # [B, D, Hmax, Wmax] dense maps, when a local loss runs
    short: torch.Tensor  # [B, D]
    long: torch.Tensor | None  # [B, D]
    box_texts: torch.Tensor | None  # [B·S_b, D]
    hard_texts: torch.Tensor | None  # [H·K, D]


# --------------------------------------------------------------------------------------------------------- model


class FGCLIP2PreTrainedModel(StrictLoadingMixin, GuardedInitMixin, AttentionSelectionMixin, PreTrainedModel):
    config_class = FGCLIP2Config
    config: FGCLIP2Config
    base_model_prefix = "fgclip2"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = [
        "EncoderLayer",
        "WalkTextEmbeddings",
        "FGCLIP2VisionEmbeddings",
        "MultiheadAttentionPoolingHead",
    ]
    _keys_to_ignore_on_load_unexpected = [r"position_ids"]
    # attached by the reference trainer; inference checkpoints do not carry them
    _keys_to_ignore_on_load_missing = [r"^logit_scale_finegraind$", r"^logit_scale_hardneg$"]

    def _init_weights(self, module: nn.Module) -> None:
        """SigLIP-style initialisation for weights a checkpoint does not provide."""
        if isinstance(module, WalkTextEmbeddings):
            module.init_tables(std=0.02)
        elif isinstance(module, FGCLIP2VisionEmbeddings):
            width = module.patch_embedding.in_features
            init.uniform_(module.patch_embedding.weight, -(width**-0.5), width**-0.5)
            init.zeros_(module.patch_embedding.bias)
            if getattr(self.config, "position_init", "normal") == "sincos":
                table = module.position_embedding.weight
                init.copy_(table, sincos_grid(module.grid, table.shape[1]).to(table.device, table.dtype))
            else:
                init.normal_(module.position_embedding.weight, std=0.02)
        elif isinstance(module, FGCLIP2VisionTransformer):
            if getattr(self.config, "attention_init", "xavier") == "mimetic":  # after the layers' own init
                for layer in module.encoder.layers:
                    attention = layer.self_attn
                    weights = mimetic_attention_weights(attention.embed_dim, attention.num_heads)
                    for name, value in weights.items():
                        weight = getattr(attention, name).weight
                        init.copy_(weight, value.to(weight.device, weight.dtype))
        elif isinstance(module, MultiheadAttentionPoolingHead):
            init.xavier_uniform_(module.probe)
            init.xavier_uniform_(module.attention.in_proj_weight)
            init.zeros_(module.attention.in_proj_bias)
            init.xavier_uniform_(module.attention.out_proj.weight)
            init.zeros_(module.attention.out_proj.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif module is self:
            init.zeros_(self.logit_scale)
            init.zeros_(self.logit_bias)
            init.constant_(self.logit_scale_finegraind, self.config.extra_logit_scale_init)
            init.constant_(self.logit_scale_hardneg, self.config.extra_logit_scale_init)
            init.zeros_(self.hard_margin)  # a non-persistent buffer: never in a checkpoint, so always set here
            if self.config.dense_head_init == "local":
                self._local_dense_head()

    def _local_dense_head(self) -> None:
        """``dense_head_init="local"``: identity projections, query and key scaled by sqrt(3) (see the config)."""
        attention = self.dense_feature_head.attention
        width = attention.embed_dim
        eye = torch.eye(width, dtype=attention.in_proj_weight.dtype, device=attention.in_proj_weight.device)
        init.copy_(attention.in_proj_weight, torch.cat([eye * 3**0.5, eye * 3**0.5, eye]))
        init.zeros_(attention.in_proj_bias)
        init.copy_(attention.out_proj.weight, eye)
        init.zeros_(attention.out_proj.bias)


class FGCLIP2Model(FGCLIP2PreTrainedModel):
    """FG-CLIP 2.

    Feature API (un-normalised outputs unless stated):

    * :meth:`get_image_features` (``pixel_values``, ``pixel_attention_mask``, ``spatial_shapes``) -> [B, D];
    * :meth:`get_text_features` with ``walk_type`` ``"short"`` (≤ 64 tokens, ``text_model.head``), ``"box"``
      (≤ 64, ``boxtext_head``) or ``"long"`` (≤ 196, ``longtext_head``);
    * :meth:`get_image_dense_features` (alias ``get_image_dense_feature``) -> [B, N, D] in the box-text space;
    * :meth:`get_image_region_features` (pixel boxes + original image sizes) -> one [K_b, D] tensor per image;
      :meth:`get_image_box_roi_features` (the reference's eval API: grid-unit boxes) -> normalised [ΣK, D].

    ``forward`` gives SigLIP logits (inference only); :meth:`compute_loss` gives the stage-2 training losses of a
    batch (:mod:`fgclip_model.stage2`).
    """

    default_loss_weights = LossWeights()  # the reference's FG-CLIP 2 recipe

    def __init__(self, config: FGCLIP2Config) -> None:
        super().__init__(config)
        text_cfg, vision_cfg = config.text_config, config.vision_config
        self.text_model = FGCLIP2TextTransformer(text_cfg)
        self.vision_model = FGCLIP2VisionTransformer(vision_cfg)
        self.dense_feature_head = MultiheadAttentionPoolingHead(vision_cfg)
        self.longtext_head = nn.Linear(text_cfg.hidden_size, text_cfg.hidden_size)
        self.boxtext_head = nn.Linear(text_cfg.hidden_size, text_cfg.hidden_size)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))
        self.logit_scale_finegraind = nn.Parameter(torch.tensor(config.extra_logit_scale_init))
        self.logit_scale_hardneg = nn.Parameter(torch.tensor(config.extra_logit_scale_init))
        # margin of the cross-modal rank loss, updated by each training step (not part of the checkpoint)
        self.register_buffer("hard_margin", torch.zeros(()), persistent=False)
        self.post_init()

    # ------------------------------------------------------------------------------------------- feature API

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **_: object,
    ) -> torch.Tensor | BaseModelOutputWithPooling:
        """Global image embeddings [B, D] (attention pooling of the post-LN patch tokens); with ``return_dict``
        (or an ``output_*`` flag) transformers 5's output: tokens, ``pooler_output`` = the embeddings, and the
        per-layer hidden states / attention weights asked for."""
        shapes = self._shapes(pixel_values, spatial_shapes)
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        if not (return_dict or output_hidden_states or output_attentions):
            return self.vision_model.head(
                self.vision_model(pixel_values, pixel_attention_mask, shapes), pixel_attention_mask
            )
        out = self.vision_model.encode(
            pixel_values, pixel_attention_mask, shapes, output_hidden_states, output_attentions
        )
        embeds = self.vision_model.head(out.last_hidden_state, pixel_attention_mask)
        return BaseModelOutputWithPooling(out.last_hidden_state, embeds, out.hidden_states, out.attentions)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: object = None,
        walk_type: str = "short",
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **_: object,
    ) -> torch.Tensor | BaseModelOutputWithPooling:
        """Text embeddings [B, D] by walk: short -> ``text_model.head``, box -> ``boxtext_head``, long ->
        ``longtext_head``. Pooled at the last position, so text is first put in the processor's layout (real tokens
        first, pad id 0 up to the walk's length: 64 short/box, 196 long): with ``attention_mask``, any padding
        (left or right, ``longest`` or any ``max_length``, as transformers' pipelines and left-padding Gemma
        tokenizers give) has the processor's features; without it, ids are taken as right-padded.
        ``return_dict`` / ``output_*``: transformers 5's output object, ``pooler_output`` = the embeddings."""
        input_ids, attention_mask = self._pad_to_walk(input_ids, attention_mask, _check_walk(walk_type))
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        if not (return_dict or output_hidden_states or output_attentions):
            return self._text_head(walk_type)(self.text_model(input_ids, attention_mask, walk_type))
        out = self.text_model.encode(input_ids, attention_mask, walk_type, output_hidden_states, output_attentions)
        embeds = self._text_head(walk_type)(out.pooler_output)
        return BaseModelOutputWithPooling(out.last_hidden_state, embeds, out.hidden_states, out.attentions)

    def get_image_dense_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Per-patch features [B, N, D] from the dense head (rows past h·w are padding)."""
        tokens = self.vision_model(pixel_values, pixel_attention_mask, self._shapes(pixel_values, spatial_shapes))
        return self.dense_feature_head.dense(tokens, pixel_attention_mask)

    get_image_dense_feature = get_image_dense_features  # the reference's name

    def get_image_region_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
        region_infos: list | None = None,
        boxes: list | None = None,
        **_: object,
    ) -> list[torch.Tensor]:
        """Region features, one un-normalised [K_b, D] tensor per image.

        ``boxes[b]``: xyxy boxes of image ``b`` normalised to [0, 1] (the call every family shares), or the
        reference's ``region_infos[b]``: xyxy boxes in pixels of the original image ``b``, whose (height, width) is
        ``image_sizes[b]``. Boxes are clipped to the image.
        """
        if boxes is not None:
            if region_infos is not None:
                raise ValueError("pass boxes= (normalised) or region_infos= with image_sizes= (pixels), not both")
            region_infos, image_sizes = boxes, [(1, 1)] * len(boxes)  # normalised = pixels of a 1 x 1 image
        if image_sizes is None or region_infos is None:
            raise ValueError(
                "get_image_region_features needs boxes=[normalised boxes, ...] or image_sizes=[(H, W), ...] and "
                "region_infos=[pixel boxes, ...]"
            )
        if not len(image_sizes) == len(region_infos) == pixel_values.shape[0]:
            raise ValueError(
                f"got {len(image_sizes)} image sizes and {len(region_infos)} box lists for {pixel_values.shape[0]} "
                "images"
            )
        shapes = self._shapes(pixel_values, spatial_shapes)
        dense = self.get_image_dense_features(pixel_values, pixel_attention_mask, shapes)
        return self._regions_per_image(dense, shapes, region_infos, image_sizes)

    def get_image_and_region_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        boxes: list | None = None,
        **_: object,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``get_image_features`` and ``get_image_region_features(boxes=...)`` (normalised xyxy per image) from one
        pass of the vision tower: (global embeddings [B, D], one un-normalised [K_b, D] tensor per image)."""
        if boxes is None or len(boxes) != pixel_values.shape[0]:
            given = "none" if boxes is None else len(boxes)
            raise ValueError(
                f"get_image_and_region_features needs one box list per image: got {given} for "
                f"{pixel_values.shape[0]} images"
            )
        shapes = self._shapes(pixel_values, spatial_shapes)
        tokens = self.vision_model(pixel_values, pixel_attention_mask, shapes)
        image = self.vision_model.head(tokens, pixel_attention_mask)
        dense = self.dense_feature_head.dense(tokens, pixel_attention_mask)
        return image, self._regions_per_image(dense, shapes, boxes, [(1, 1)] * len(boxes))

    def _regions_per_image(self, dense, shapes, region_infos, image_sizes) -> list[torch.Tensor]:
        """RoI features of pixel boxes ``region_infos[b]`` of images of (height, width) ``image_sizes[b]``."""
        normalised = []
        for b, (regions, (height, width)) in enumerate(zip(region_infos, image_sizes, strict=True)):
            regions = torch.as_tensor(regions, dtype=torch.float32).reshape(-1, 4)
            check_boxes(regions, what=f"region of image {b}:")
            normalised.append(regions / torch.tensor([width, height, width, height], dtype=torch.float32))
        features = self._region_features(dense, shapes, normalised)
        return list(features.split([len(b) for b in normalised]))

    def get_image_box_roi_features(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        box_info: list[torch.Tensor] | None = None,
        **_: object,
    ) -> torch.Tensor:
        """The reference eval API: ``box_info[b]`` is [K, 5] (0, x1, y1, x2, y2) or [K, 4] in feature-grid units
        of image ``b``; returns the **L2-normalised** RoI features [ΣK, D]."""
        if box_info is None:
            raise ValueError("box_info is required")
        shapes = self._shapes(pixel_values, spatial_shapes)
        dense = self.get_image_dense_features(pixel_values, pixel_attention_mask, shapes)
        grid_hw = shapes.tolist()
        normalised = []
        for b, boxes in enumerate(box_info):
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
            boxes = boxes[:, 1:] if boxes.shape[-1] == 5 else boxes
            h, w = grid_hw[b]
            normalised.append(boxes.reshape(-1, 4) / torch.tensor([w, h, w, h], dtype=torch.float32))
        return normalize(self._region_features(dense, shapes, normalised).float())

    # ----------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        walk_type: str = "short",
        return_loss: bool = False,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        position_ids: object = None,
        token_type_ids: object = None,
    ) -> FGCLIP2Output | tuple:
        """SigLIP logits for (texts, images): ``logits_per_text = exp(s)·T·Iᵀ + b`` (with ``return_loss`` the
        SigLIP loss of the pairs). Inference only: the stage-2 training losses are :meth:`compute_loss`.
        ``position_ids`` / ``token_type_ids`` (passed by some transformers callers) are accepted and ignored."""
        if input_ids is None or pixel_values is None:
            raise ValueError("forward needs input_ids and pixel_values (training losses: compute_loss(batch))")
        hidden, attentions = self._output_flags(output_hidden_states, output_attentions)
        flags = {"output_hidden_states": hidden, "output_attentions": attentions}
        vision = self.get_image_features(pixel_values, pixel_attention_mask, spatial_shapes, return_dict=True, **flags)
        text = self.get_text_features(input_ids, attention_mask, walk_type=walk_type, return_dict=True, **flags)
        image_embeds, text_embeds = normalize(vision.pooler_output), normalize(text.pooler_output)
        logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.T + self.logit_bias
        loss = None
        if return_loss:
            loss = sigmoid_loss(text_embeds, image_embeds, self.logit_scale.exp(), self.logit_bias)
        out = FGCLIP2Output(loss, logits_per_text.T, logits_per_text, text_embeds, image_embeds, text, vision)
        return out if return_dict is not False else out.to_tuple()

    # ----------------------------------------------------------------------------------------- training loss

    def compute_loss(
        self,
        batch: Stage2Inputs,
        weights: LossWeights | None = None,
        switches: Stage2Losses | None = None,
        *,
        gather=gather_with_grad,
        hard_margin: torch.Tensor | float | None = None,
    ) -> FGCLIP2Stage2Output:
        """FG-CLIP 2 stage-2 losses (the reference trainer model's forward) of a batch (:mod:`fgclip_model.stage2`).

        Global: ``L_sig(I, long) + L_sig(I, short)`` (texts gathered across ranks with ``gather``). Local:
        region InfoNCE, TIC over region texts, and the hard-negative block ``itc·itc + pair·pair + rank·rank``
        (``weights``, default :attr:`default_loss_weights`). ``switches``: which local losses run (default: those
        the batch has tensors for). ``hard_margin`` defaults to the model's running margin τ, which a
        training-mode call replaces with the new estimate (mean over ranks, clamped to [0, ``weights.margin_max``]),
        returned as ``hard_margin``.
        """
        weights = weights or self.default_loss_weights
        switches = switches or Stage2Losses.of(batch)
        parsed = ParsedBatch.parse(batch, switches)
        features = self._encode(batch, parsed)
        out = FGCLIP2Stage2Output()
        out.loss_short, out.loss_long = self._global_losses(features, gather)
        loss = out.loss_short if out.loss_long is None else out.loss_short + out.loss_long
        if parsed.has_regions:
            out.loss_region, out.loss_tic = self._regional_losses(features, parsed)
            loss = loss + weights.region * out.loss_region + weights.tic * out.loss_tic
        margin = self.hard_margin if hard_margin is None else torch.as_tensor(hard_margin, dtype=torch.float32)
        out.hard_margin = margin
        estimate = margin.to(features.image.device)  # ranks without hard boxes contribute their current margin
        if parsed.has_hard:
            terms = self._hard_negative_terms(features, parsed, margin)
            out.loss_hard_itc, out.loss_hard_pair, out.loss_hard_rank = terms.itc, terms.pair, terms.rank
            out.loss_hard = (
                weights.hard_itc * terms.itc + weights.hard_pair * terms.pair + weights.hard_rank * terms.rank
            )
            loss = loss + weights.hard * out.loss_hard
            estimate = terms.margin_estimate
        elif switches.hard:
            out.loss_hard = features.image.sum() * 0.0
        if switches.hard:
            out.hard_margin = self._update_margin(estimate, weights.margin_max, running=hard_margin is None)
        out.loss = loss
        return out

    def _encode(self, batch: Stage2Inputs, parsed: ParsedBatch) -> _Stage2Features:
        """One vision pass (global embeddings, and the dense maps when a local loss runs) and the texts: every
        64-position text (captions, box captions, hard candidates) in one tower call, the long captions."""
        mask = batch.pixel_attention_mask
        shapes = self._shapes(batch.pixel_values, batch.spatial_shapes)
        tokens = self.vision_model(batch.pixel_values, mask, shapes)
        image = normalize(self.vision_model.head(tokens, mask))
        pieces = parsed.short_pieces()
        short_pooled, *rest = self._short_tower(pieces).split([p.shape[0] for p in pieces])
        short = normalize(self.text_model.head(short_pooled))
        box_texts = normalize(self.boxtext_head(rest.pop(0))) if parsed.has_regions else None
        hard_texts = normalize(self.boxtext_head(rest.pop(0))) if parsed.has_hard else None
        long = None
        if parsed.text_long is not None:
            long = normalize(self.longtext_head(self.text_model(parsed.text_long, walk_type="long")))
        maps = None
        if parsed.has_regions or parsed.has_hard:
            maps = self._feature_maps(self.dense_feature_head.dense(tokens, mask), shapes)
        return _Stage2Features(image, shapes, maps, short, long, box_texts, hard_texts)

    def _global_losses(self, f: _Stage2Features, gather) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(short, long) sigmoid losses of the local images against the captions of every rank (long: ``None``
        without long captions)."""
        scale, bias = self.logit_scale.exp(), self.logit_bias
        short_all, offset = gather(f.short)
        short = sigmoid_loss(f.image, short_all, scale, bias, offset)
        if f.long is None:
            return short, None
        long_all, _ = gather(f.long)
        return short, sigmoid_loss(f.image, long_all, scale, bias, offset)

    def _regional_losses(self, f: _Stage2Features, parsed: ParsedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(region↔box-caption InfoNCE, TIC among the box captions) over the real box slots."""
        regions = normalize(self._slot_region_features(f.maps, f.shapes, parsed.boxes))
        valid = parsed.box_valid
        region = masked_contrastive_loss(regions, f.box_texts, valid, self.logit_scale_finegraind.exp())
        return region, text_intra_contrastive_loss(f.box_texts, valid)

    def _hard_negative_terms(self, f: _Stage2Features, parsed: ParsedBatch, margin: torch.Tensor):
        """The itc, pair and rank terms of the hard boxes (rank margin ``margin``) and the new margin estimate."""
        regions = normalize(self._slot_region_features(f.maps, f.shapes, parsed.hard_boxes)[parsed.hard_order])
        texts = f.hard_texts.reshape(parsed.num_hard, parsed.candidates, -1)
        return fgclip2_hard_negative_terms(regions, texts, self.logit_scale_hardneg.exp(), margin, parsed.hard_mask)

    def _update_margin(self, estimate: torch.Tensor, margin_max: float, running: bool) -> torch.Tensor:
        """τ for the next step: the estimate averaged over ranks, clamped to [0, ``margin_max``]; kept as the
        running margin when training with it (``running``)."""
        margin = all_reduce_mean(estimate.float()).clamp(0.0, margin_max)
        if self.training and running:
            self.hard_margin.copy_(margin)
        return margin

    # ------------------------------------------------------------------------------------------- internals

    @staticmethod
    def _shapes(pixel_values: torch.Tensor, spatial_shapes: torch.Tensor | None) -> torch.Tensor:
        if spatial_shapes is None:
            raise ValueError("spatial_shapes [B, 2] (patch rows, patch columns) is required; the processor returns it")
        if spatial_shapes.shape != (pixel_values.shape[0], 2):
            raise ValueError(f"spatial_shapes must be [B, 2], got {tuple(spatial_shapes.shape)}")
        return spatial_shapes

    def _pad_to_walk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, walk_type: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The processor's layout: real tokens first, padded on the right to the walk's length (64 / 196). With a
        mask, the real tokens are found from it, so left padding, ``padding="longest"`` and a ``max_length`` other
        than the walk's all give the processor's features; without one, ids are taken as right-padded."""
        text = self.config.text_config
        length = text.longtext_len if walk_type == "long" else text.max_position_embeddings
        if attention_mask is not None:
            return pack_tokens(input_ids, attention_mask, length, PAD_ID, text.padding_side)
        missing = length - input_ids.shape[-1]
        if missing <= 0:
            return input_ids, attention_mask
        return F.pad(input_ids, (0, missing), value=PAD_ID), attention_mask

    def _text_head(self, walk_type: str) -> nn.Module:
        return {"short": self.text_model.head, "box": self.boxtext_head, "long": self.longtext_head}[walk_type]

    def _short_tower(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Pooled 64-position features of several id batches in one tower call (same length required: pooling
        reads the last position, so the pieces must already be padded alike)."""
        lengths = {p.shape[-1] for p in pieces}
        if len(lengths) != 1:
            raise ValueError(f"short, box and hard texts must share one padded length, got {sorted(lengths)}")
        return encode_unique(lambda unique: self.text_model(unique, walk_type="short"), torch.cat(pieces))

    @staticmethod
    def _feature_maps(dense: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        """[B, N, D] dense tokens -> [B, D, Hmax, Wmax] maps, each image's h×w grid edge-replicated to the batch
        maximum (RoIAlign clamps samples to the border, so boxes inside the image read exactly their own map)."""
        h, w = shapes[:, 0], shapes[:, 1]
        h_max, w_max = (int(v) for v in shapes.max(0).values.tolist())
        rows = torch.minimum(torch.arange(h_max, device=dense.device)[None, :], (h - 1)[:, None].to(dense.device))
        cols = torch.minimum(torch.arange(w_max, device=dense.device)[None, :], (w - 1)[:, None].to(dense.device))
        index = rows[:, :, None] * w.to(dense.device)[:, None, None] + cols[:, None, :]  # [B, Hmax, Wmax]
        gathered = torch.gather(dense, 1, index.reshape(dense.shape[0], -1, 1).expand(-1, -1, dense.shape[-1]))
        return gathered.reshape(dense.shape[0], h_max, w_max, -1).permute(0, 3, 1, 2)

    def _region_features(self, dense: torch.Tensor, shapes: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """Un-normalised RoI features [ΣK, D] of per-image normalised xyxy boxes (clipped to the image)."""
        maps = self._feature_maps(dense, shapes)
        if not boxes or sum(len(b) for b in boxes) == 0:
            return dense.new_zeros(0, dense.shape[-1])
        rois = normalized_rois(boxes, shapes.flip(-1).to(dense.device), clip=True)
        return roi_features(maps, rois)

    @staticmethod
    def _slot_region_features(maps: torch.Tensor, shapes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """RoI features of every box slot on the :meth:`_feature_maps` of a batch: boxes [B, S, 4] normalised ->
        [B·S, D] (padding slots give zeros)."""
        return roi_features(maps, normalized_rois(boxes, shapes.flip(-1).to(boxes.device), clip=True))

    # ------------------------------------------------------------------------------ initialisation helpers

    @classmethod
    def from_siglip2(cls, source, **kwargs) -> FGCLIP2Model:
        """Convert a SigLIP 2 (NaFlex) ``Siglip2Model`` — or a folder holding one — into FG-CLIP 2.

        The SigLIP 2 weights load unchanged; the parts FG-CLIP 2 adds are initialised as the reference's
        ``from_siglip2`` recipe does (:meth:`init_from_siglip2_heads`), the two extra temperatures at
        ``config.extra_logit_scale_init``. Any other missing or unexpected key is an error.
        """
        from transformers import Siglip2Model

        siglip = source if isinstance(source, Siglip2Model) else Siglip2Model.from_pretrained(source, **kwargs)
        model = cls(fgclip2_config_from_siglip2(siglip.config)).to(siglip.dtype)
        state = {k: v for k, v in siglip.state_dict().items() if not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        added = (
            "text_model.embeddings.position_embedding_res.",
            "text_model.embeddings.position_embedding_ori.",
            "dense_feature_head.",
            "longtext_head.",
            "boxtext_head.",
            "logit_scale_finegraind",
            "logit_scale_hardneg",
        )
        surprising = [k for k in missing if not k.startswith(added)]
        if surprising or unexpected:
            raise ValueError(f"not a SigLIP 2 NaFlex state dict: missing {surprising}, unexpected {unexpected}")
        model.init_from_siglip2_heads()
        with torch.no_grad():
            model.logit_scale_finegraind.fill_(model.config.extra_logit_scale_init)
            model.logit_scale_hardneg.fill_(model.config.extra_logit_scale_init)
        return model.eval()

    def init_from_siglip2_heads(self) -> None:
        """The reference's ``from_siglip2`` step: stretch the 64-row table into both 196-row long tables, copy
        ``text_model.head`` into ``longtext_head`` and ``boxtext_head``, and ``vision_model.head`` into
        ``dense_feature_head``."""
        self.text_model.embeddings.stretch_long_tables()
        with torch.no_grad():
            for head in (self.longtext_head, self.boxtext_head):
                head.load_state_dict(self.text_model.head.state_dict())
            self.dense_feature_head.load_state_dict(self.vision_model.head.state_dict())
