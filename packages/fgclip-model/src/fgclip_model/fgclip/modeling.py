"""FG-CLIP v1 (ICML 2025): CLIP with a 248-position long-text walk, dense patch features and region features.

Checkpoint compatible with the released ``qihoo360/fg-clip-base`` / ``fg-clip-large`` layout (keys of the
reference ``FGCLIPModel``). Differences from the reference code (its bugs, fixed):

* long text of any length up to 248 tokens works (the reference needs exactly 248), short text is checked
  against 77 with a clear error;
* dense features do not run the discarded full last block; non-square grids and interpolated position tables
  are supported and differentiable;
* the stage-2 losses need no process group, work with 0 or 1 valid box and any number of hard negatives per
  box, never cast to bf16 by themselves, and every short-walk text of a step goes through one text-tower call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from fgclip_model.distributed import gather_with_grad
from fgclip_model.layers import MLP, Attention, Encoder, WalkTextEmbeddings, encode_unique, pack_left
from fgclip_model.loading import (
    AttentionSelectionMixin,
    GuardedInitMixin,
    StrictLoadingMixin,
    nested_tuple,
)
from fgclip_model.losses import contrastive_loss, hard_negative_loss, masked_contrastive_loss, normalize
from fgclip_model.regions import (
    boxes_with_batch_index,
    check_boxes,
    dense_to_map,
    normalized_rois,
    normalized_to_grid,
    pixels_to_normalized,
    roi_features,
)
from fgclip_model.stage2 import LossWeights, ParsedBatch, Stage2Inputs, Stage2Losses

from .configuration import FGCLIPConfig

WalkType = Literal["short", "long", "box"]
WALK_TYPES = ("short", "long", "box")


def resolve_walk_type(
    walk_type: str | None, walk_short_pos: bool | None = None, use_bbox: bool | None = None
) -> WalkType:
    """Map the reference keywords (``walk_short_pos``, ``use_bbox``) onto a walk type; ``walk_type`` wins."""
    if walk_type is not None:
        if walk_type not in WALK_TYPES:
            raise ValueError(f"walk_type must be one of {WALK_TYPES}, got {walk_type!r}")
        return walk_type  # type: ignore[return-value]
    short = True if walk_short_pos is None else walk_short_pos
    if use_bbox:
        if not short:
            raise ValueError(
                "walk_short_pos=False with use_bbox=True mixes short positions with the long projection; "
                "the reference never uses it and fgclip does not support it"
            )
        return "box"
    return "short" if short else "long"


def first_eos_index(input_ids: torch.Tensor, eos_token_id: int, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Position of the first EOS token per row; rows without one pool their last attended token."""
    is_eos = input_ids == eos_token_id
    first = is_eos.int().argmax(dim=-1)
    if attention_mask is not None:
        last = attention_mask.long().sum(-1).clamp(min=1) - 1
    else:
        last = torch.full_like(first, input_ids.shape[-1] - 1)
    return torch.where(is_eos.any(dim=-1), first, last)


# --------------------------------------------------------------------------------------------------- text tower


class FGCLIPTextTransformer(nn.Module):
    """Causal pre-LN text transformer with EOS pooling (checkpoint prefix ``text_model``)."""

    def __init__(self, config: CLIPTextConfig, long_positions: int, keep_positions: int) -> None:
        super().__init__()
        self.config = config
        self.embeddings = WalkTextEmbeddings(
            config.vocab_size, config.hidden_size, config.max_position_embeddings, long_positions, keep_positions
        )
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, walk_type: WalkType = "short"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (last_hidden_state [B, L, D], pooled [B, D] at the first EOS)."""
        out = self.encode(input_ids, attention_mask, walk_type)
        return out.last_hidden_state, out.pooler_output

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        walk_type: WalkType = "short",
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        """The tower's outputs: final-LN states, the first EOS as ``pooler_output`` (before the projection), and
        per-layer hidden states / attention weights when asked."""
        hidden = self.embeddings(input_ids, walk_type)
        length = input_ids.shape[-1]
        mask = None
        if attention_mask is not None:
            causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
            # every token sees itself, so a fully padded query row never turns into NaN
            mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(
                length, dtype=torch.bool, device=input_ids.device
            )
        out = self.encoder(
            hidden,
            attn_mask=mask,
            is_causal=True,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        hidden = self.final_layer_norm(out.last_hidden_state)
        index = first_eos_index(input_ids, self.config.eos_token_id, attention_mask)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        return BaseModelOutputWithPooling(hidden, pooled, out.hidden_states, out.attentions)


# ------------------------------------------------------------------------------------------------- vision tower


class FGCLIPVisionEmbeddings(nn.Module):
    """Patch conv (no bias) + class token + learned positions, optionally interpolated to another image size."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.randn(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size, bias=False
        )
        self.grid = self.image_size // self.patch_size
        self.position_embedding = nn.Embedding(self.grid * self.grid + 1, config.hidden_size)

    def positions(self, grid_hw: tuple[int, int], interpolate: bool) -> torch.Tensor:
        table = self.position_embedding.weight
        if grid_hw == (self.grid, self.grid):
            return table
        if not interpolate:
            h, w = grid_hw
            raise ValueError(
                f"images of {h * self.patch_size}x{w * self.patch_size} px do not match the model's "
                f"{self.image_size}x{self.image_size}; resize them or pass interpolate_pos_encoding=True"
            )
        patch = table[1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch.float(), size=grid_hw, mode="bicubic", align_corners=False).to(table.dtype)
        return torch.cat([table[:1], patch.permute(0, 2, 3, 1).flatten(1, 2)[0]])

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        grid_hw = (patches.shape[-2], patches.shape[-1])
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        embeddings = torch.cat([cls, patches], dim=1) + self.positions(grid_hw, interpolate_pos_encoding)
        return embeddings, grid_hw


class FGCLIPVisionTransformer(nn.Module):
    """Pre-LN ViT (checkpoint prefix ``vision_model``) with a dense-feature head on its last block."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = FGCLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def trunk(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Hidden states entering the last block ([B, 1+N, D]) and the patch grid (h, w)."""
        hidden, grid_hw = self.embeddings(pixel_values, interpolate_pos_encoding)
        hidden = self.pre_layrnorm(hidden)
        return self.encoder(hidden, layers=slice(None, -1)).last_hidden_state, grid_hw

    def pool(self, trunk: torch.Tensor) -> torch.Tensor:
        """Last block, then ``post_layernorm`` of the class token -> [B, D]."""
        return self.post_layernorm(self.encoder.layers[-1](trunk)[0][:, 0])

    def encode(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        """The standard ViT outputs (as transformers' CLIP): the last block's states, ``post_layernorm`` of the
        class token as ``pooler_output``, per-layer hidden states / attention weights when asked."""
        hidden, _ = self.embeddings(pixel_values, interpolate_pos_encoding)
        out = self.encoder(
            self.pre_layrnorm(hidden), output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        pooled = self.post_layernorm(out.last_hidden_state[:, 0])
        return BaseModelOutputWithPooling(out.last_hidden_state, pooled, out.hidden_states, out.attentions)

    def dense(self, trunk: torch.Tensor) -> torch.Tensor:
        """Last block without token mixing, then ``post_layernorm`` of every patch token -> [B, N, D]."""
        return self.post_layernorm(self.encoder.layers[-1].forward_without_attention(trunk)[:, 1:])


# ------------------------------------------------------------------------------------------------------ outputs


@dataclass
class FGCLIPOutput(ModelOutput):
    """Inference forward: similarity logits, the normalised embeddings and the towers' outputs."""

    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return nested_tuple(self)


@dataclass
class FGCLIPStage2Output(ModelOutput):
    """``compute_loss``: the weighted total and every loss term on its own (unweighted)."""

    loss: torch.Tensor | None = None
    loss_long: torch.Tensor | None = None
    loss_short: torch.Tensor | None = None
    loss_region: torch.Tensor | None = None
    loss_hard: torch.Tensor | None = None


@dataclass
class _Stage2Features:
    """What :meth:`FGCLIPModel.compute_loss` encodes once per step (normalised embeddings)."""

    image: torch.Tensor  # [B, P]
    feature_map: torch.Tensor | None  # [B, P, h, w] projected dense features, when a local loss runs
    grid_hw: tuple[int, int]
    short: torch.Tensor  # [B, P]
    long: torch.Tensor | None  # [B, P]
    box_texts: torch.Tensor | None  # [B·S_b, P]
    hard_texts: torch.Tensor | None  # [H·K, P]


# --------------------------------------------------------------------------------------------------------- model


class FGCLIPPreTrainedModel(StrictLoadingMixin, GuardedInitMixin, AttentionSelectionMixin, PreTrainedModel):
    config_class = FGCLIPConfig
    config: FGCLIPConfig
    base_model_prefix = "clip"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["EncoderLayer", "WalkTextEmbeddings", "FGCLIPVisionEmbeddings"]
    # OpenAI-era and Hub files carry non-persistent `position_ids` buffers (reportedly with garbage): ignore them
    _keys_to_ignore_on_load_unexpected = [r"position_ids"]

    def _init_weights(self, module: nn.Module) -> None:
        """CLIP's initialisation (used for weights a checkpoint does not provide, e.g. training from scratch)."""
        factor = self.config.initializer_factor
        if isinstance(module, WalkTextEmbeddings):
            module.init_tables(std=0.02 * factor)
        elif isinstance(module, FGCLIPVisionEmbeddings):
            dim = module.class_embedding.shape[0]
            init.normal_(module.class_embedding, std=dim**-0.5 * factor)
            init.normal_(module.patch_embedding.weight, std=self.config.vision_config.initializer_range * factor)
            init.normal_(module.position_embedding.weight, std=self.config.vision_config.initializer_range * factor)
        elif isinstance(module, Attention):
            layers = self._tower_layers(module)
            in_std = module.embed_dim**-0.5 * (2 * layers) ** -0.5 * factor
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.normal_(proj.weight, std=in_std)
            init.normal_(module.out_proj.weight, std=module.embed_dim**-0.5 * factor)
            for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                init.zeros_(proj.bias)
        elif isinstance(module, MLP):
            width = module.fc1.in_features
            layers = self._tower_layers(module)
            init.normal_(module.fc1.weight, std=(2 * width) ** -0.5 * factor)
            init.normal_(module.fc2.weight, std=width**-0.5 * (2 * layers) ** -0.5 * factor)
            init.zeros_(module.fc1.bias)
            init.zeros_(module.fc2.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif module is self:  # the three temperatures
            for scale in (self.logit_scale, self.logit_scale_finegraind, self.logit_scale_hardneg):
                init.constant_(scale, self.config.logit_scale_init_value)
        elif isinstance(module, nn.Linear) and module.bias is None:  # the bias-free projections
            init.normal_(module.weight, std=module.in_features**-0.5 * factor)

    def _tower_layers(self, module: nn.Module) -> int:
        text = any(m is module for m in self.get_submodule("text_model").modules())
        return (self.config.text_config if text else self.config.vision_config).num_hidden_layers


class FGCLIPModel(FGCLIPPreTrainedModel):
    """FG-CLIP v1.

    Feature API (all outputs un-normalised, like the reference):

    * :meth:`get_image_features` -> [B, P];
    * :meth:`get_text_features` with ``walk_type`` ``"short"`` (≤ 77 tokens, ``text_projection``),
      ``"box"`` (same as short in v1) or ``"long"`` (≤ 248 tokens, ``text_filip_projection``); the reference
      keywords ``walk_short_pos`` / ``use_bbox`` keep working;
    * :meth:`get_image_dense_features` -> [B, N, P] per-patch features;
    * :meth:`get_image_region_features` -> one [n_i, P] tensor per image, and the reference's
      :meth:`get_image_box_roi_features` (boxes in feature-grid units) -> [K, P].

    ``forward`` gives CLIP logits (inference only); :meth:`compute_loss` gives the stage-2 training losses of a
    batch (:mod:`fgclip_model.stage2`).
    """

    default_loss_weights = LossWeights(region=0.1)  # the reference's v1 recipe (it has no TIC term)

    def __init__(self, config: FGCLIPConfig) -> None:
        if not isinstance(config, FGCLIPConfig):  # e.g. a plain CLIPConfig from AutoConfig
            config = FGCLIPConfig(**config.to_dict())
        super().__init__(config)
        text_cfg, vision_cfg = config.text_config, config.vision_config
        self.text_model = FGCLIPTextTransformer(
            text_cfg, config.long_max_position_embeddings, config.long_keep_positions
        )
        self.vision_model = FGCLIPVisionTransformer(vision_cfg)
        self.visual_projection = nn.Linear(vision_cfg.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(text_cfg.hidden_size, config.projection_dim, bias=False)
        self.text_filip_projection = nn.Linear(text_cfg.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.logit_scale_finegraind = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.logit_scale_hardneg = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    # ------------------------------------------------------------------------------------------- feature API

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> torch.Tensor | BaseModelOutputWithPooling:
        """Global image embeddings [B, P] (class token -> post-LN -> ``visual_projection``); with ``return_dict``
        (or an ``output_*`` flag) transformers 5's CLIP output, ``pooler_output`` = the embeddings."""
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        if not (return_dict or output_hidden_states or output_attentions):
            trunk, _ = self.vision_model.trunk(pixel_values, interpolate_pos_encoding)
            return self.visual_projection(self.vision_model.pool(trunk))
        out = self.vision_model.encode(pixel_values, interpolate_pos_encoding, output_hidden_states, output_attentions)
        return replace(out, pooler_output=self.visual_projection(out.pooler_output))

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        walk_type: WalkType | None = None,
        *,
        walk_short_pos: bool | None = None,
        use_bbox: bool | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **_: object,
    ) -> torch.Tensor | BaseModelOutputWithPooling:
        """Text embeddings [B, P] pooled at the first EOS.

        ``walk_type``: ``"short"`` (default) and ``"box"`` use the 77-row table and ``text_projection``;
        ``"long"`` uses the 248-row tables and ``text_filip_projection``. Any length up to the walk's maximum works;
        with ``attention_mask`` the padding side does not matter (real tokens are moved to the front first).
        ``return_dict`` / ``output_*``: transformers 5's CLIP output object, ``pooler_output`` = the embeddings.
        """
        walk = resolve_walk_type(walk_type, walk_short_pos, use_bbox)
        if attention_mask is not None:  # real tokens first: left padding would shift positions and the first EOS
            input_ids, attention_mask = pack_left(input_ids, attention_mask)  # pads after EOS are never read
        projection = self.text_filip_projection if walk == "long" else self.text_projection
        output_hidden_states, output_attentions = self._output_flags(output_hidden_states, output_attentions)
        out = self.text_model.encode(input_ids, attention_mask, walk, output_hidden_states, output_attentions)
        if not (return_dict or output_hidden_states or output_attentions):
            return projection(out.pooler_output)
        return replace(out, pooler_output=projection(out.pooler_output))

    def get_image_dense_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, box_info: object = None
    ) -> torch.Tensor:
        """Per-patch features [B, N, P] in row-major patch order (``box_info`` is accepted and ignored)."""
        trunk, _ = self.vision_model.trunk(pixel_values, interpolate_pos_encoding)
        return self.visual_projection(self.vision_model.dense(trunk))

    def _dense_map(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> torch.Tensor:
        trunk, grid_hw = self.vision_model.trunk(pixel_values, interpolate_pos_encoding)
        return dense_to_map(self.visual_projection(self.vision_model.dense(trunk)), grid_hw)

    def get_image_box_roi_features(
        self,
        pixel_values: torch.Tensor,
        box_info: list[torch.Tensor] | torch.Tensor,
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        """The reference API: RoI features [K, P] (float32, un-normalised) for boxes in feature-grid units.

        ``box_info``: a list with one [n_i, 4] xyxy tensor per image, or a [K, 5] tensor (batch index first).
        """
        feature_map = self._dense_map(pixel_values, interpolate_pos_encoding)
        return roi_features(feature_map.float(), boxes_with_batch_index(box_info))

    def get_image_region_features(
        self,
        pixel_values: torch.Tensor,
        boxes: list[torch.Tensor],
        image_sizes: list[tuple[int, int]] | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> list[torch.Tensor]:
        """Region features, one un-normalised [n_i, P] tensor per image.

        ``boxes[i]``: [n_i, 4] xyxy, in pixels of the original image ``i`` when ``image_sizes`` ((height, width)
        each) is given, otherwise normalised to [0, 1]. FG-CLIP squashes images to a square, so normalised
        coordinates carry over unchanged.
        """
        if len(boxes) != pixel_values.shape[0]:
            raise ValueError(f"got {len(boxes)} box lists for {pixel_values.shape[0]} images")
        feature_map = self._dense_map(pixel_values, interpolate_pos_encoding)
        return self._regions_per_image(feature_map, boxes, image_sizes)

    def get_image_and_region_features(
        self, pixel_values: torch.Tensor, boxes: list[torch.Tensor], interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``get_image_features`` and ``get_image_region_features(boxes=...)`` (normalised xyxy per image) from one
        pass of the vision tower: (global embeddings [B, P], one un-normalised [n_i, P] tensor per image)."""
        if len(boxes) != pixel_values.shape[0]:
            raise ValueError(f"got {len(boxes)} box lists for {pixel_values.shape[0]} images")
        trunk, grid_hw = self.vision_model.trunk(pixel_values, interpolate_pos_encoding)
        image = self.visual_projection(self.vision_model.pool(trunk))
        feature_map = dense_to_map(self.visual_projection(self.vision_model.dense(trunk)), grid_hw)
        return image, self._regions_per_image(feature_map, boxes, None)

    @staticmethod
    def _regions_per_image(feature_map, boxes, image_sizes) -> list[torch.Tensor]:
        """RoI features of ``boxes[i]`` (pixels of ``image_sizes[i]``, or normalised) on a [B, P, h, w] map."""
        grid_hw = (feature_map.shape[-2], feature_map.shape[-1])
        grid_boxes = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, dtype=torch.float32, device=feature_map.device).reshape(-1, 4)
            check_boxes(b, what=f"box of image {i}:")
            if image_sizes is not None:
                b = pixels_to_normalized(b, image_sizes[i])
            grid_boxes.append(normalized_to_grid(b, grid_hw))
        features = roi_features(feature_map, boxes_with_batch_index(grid_boxes))
        return list(features.split([len(b) for b in grid_boxes]))

    # ----------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        walk_type: WalkType = "short",
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        position_ids: object = None,
        token_type_ids: object = None,
    ) -> FGCLIPOutput | tuple:
        """CLIP similarity logits for (``input_ids``, ``pixel_values``). Inference only: the training losses are
        :meth:`compute_loss`. ``position_ids`` / ``token_type_ids`` (passed by some transformers callers) are
        accepted and ignored."""
        if input_ids is None or pixel_values is None:
            raise ValueError("forward needs input_ids and pixel_values (training losses: compute_loss(batch))")
        hidden, attentions = self._output_flags(output_hidden_states, output_attentions)
        flags = {"output_hidden_states": hidden, "output_attentions": attentions}
        vision = self.get_image_features(pixel_values, interpolate_pos_encoding, return_dict=True, **flags)
        text = self.get_text_features(input_ids, attention_mask, walk_type, return_dict=True, **flags)
        image_embeds, text_embeds = normalize(vision.pooler_output), normalize(text.pooler_output)
        logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.T
        out = FGCLIPOutput(
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text,
            vision_model_output=vision,
        )
        return out if return_dict is not False else out.to_tuple()

    # ----------------------------------------------------------------------------------------- training loss

    def compute_loss(
        self,
        batch: Stage2Inputs,
        weights: LossWeights | None = None,
        switches: Stage2Losses | None = None,
        *,
        gather=gather_with_grad,
    ) -> FGCLIPStage2Output:
        """FG-CLIP stage-2 losses of a batch (:mod:`fgclip_model.stage2`).

        ``switches``: which local losses run (default: those the batch has tensors for); ``weights``: default
        :attr:`default_loss_weights`. Terms: ``loss_long`` and ``loss_short`` (global, gathered across ranks with
        ``gather``), ``loss_region`` and ``loss_hard`` (local);
        ``loss = long + short + weights.region·region + weights.hard·hard``. Shapes are static: no host-device
        synchronisation (except flat ``hard_texts``, the reference layout).
        """
        weights = weights or self.default_loss_weights
        switches = switches or Stage2Losses.of(batch)
        parsed = ParsedBatch.parse(batch, switches)
        features = self._encode(batch.pixel_values, parsed)
        out = FGCLIPStage2Output()
        out.loss_short, out.loss_long = self._global_losses(features, gather)
        loss = out.loss_short if out.loss_long is None else out.loss_short + out.loss_long
        if parsed.has_regions:
            out.loss_region = self._region_loss(features, parsed)
            loss = loss + weights.region * out.loss_region
        if switches.hard:
            out.loss_hard = self._hard_negative_loss(features, parsed)
            loss = loss + weights.hard * out.loss_hard
        out.loss = loss
        return out

    def _encode(self, pixel_values: torch.Tensor, parsed: ParsedBatch) -> _Stage2Features:
        """One vision pass (global embeddings, and the dense map when a local loss runs) and the texts: every
        short-walk text (captions, box captions, hard candidates) in one text-tower call, the long captions."""
        trunk, grid_hw = self.vision_model.trunk(pixel_values)
        image = normalize(self.visual_projection(self.vision_model.pool(trunk)))
        feature_map = None
        if parsed.has_regions or parsed.has_hard:
            feature_map = dense_to_map(self.visual_projection(self.vision_model.dense(trunk)), grid_hw)
        pieces = parsed.short_pieces()
        short_embeds = normalize(self.text_projection(self._short_tower(pieces)))
        short, *rest = short_embeds.split([p.shape[0] for p in pieces])
        box_texts = rest.pop(0) if parsed.has_regions else None
        hard_texts = rest.pop(0) if parsed.has_hard else None
        long = None
        if parsed.text_long is not None:
            _, long_pooled = self.text_model(parsed.text_long, walk_type="long")
            long = normalize(self.text_filip_projection(long_pooled))
        return _Stage2Features(image, feature_map, grid_hw, short, long, box_texts, hard_texts)

    def _global_losses(self, f: _Stage2Features, gather) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(short, long) image↔caption InfoNCE over the batch gathered from every rank (long: ``None`` without
        long captions)."""
        image_all, offset = gather(f.image)
        short_all, _ = gather(f.short)
        scale = self.logit_scale.exp()
        short = contrastive_loss(f.image, f.short, image_all, short_all, scale, offset)
        if f.long is None:
            return short, None
        long_all, _ = gather(f.long)
        return short, contrastive_loss(f.image, f.long, image_all, long_all, scale, offset)

    def _region_loss(self, f: _Stage2Features, parsed: ParsedBatch) -> torch.Tensor:
        """Region↔box-caption InfoNCE over the real box slots of the local batch."""
        regions = self._roi_embeds(f.feature_map, parsed.boxes.to(f.feature_map.dtype), f.grid_hw)
        return masked_contrastive_loss(regions, f.box_texts, parsed.box_valid, self.logit_scale_finegraind.exp())

    def _hard_negative_loss(self, f: _Stage2Features, parsed: ParsedBatch) -> torch.Tensor:
        """Each hard box against its positive and negative captions (a zero that keeps the graph without any)."""
        if not parsed.has_hard:
            return f.image.sum() * 0.0
        texts = f.hard_texts.reshape(parsed.num_hard, parsed.candidates, -1)
        regions = self._roi_embeds(f.feature_map, parsed.hard_boxes.to(f.feature_map.dtype), f.grid_hw)
        return hard_negative_loss(regions[parsed.hard_order], texts, self.logit_scale_hardneg.exp(), parsed.hard_mask)

    # ------------------------------------------------------------------------------------------- internals

    def _short_tower(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Pooled short-walk text features of several id batches in one tower call (right-padded with EOS)."""
        length = max(p.shape[-1] for p in pieces)
        pad = self.config.text_config.pad_token_id
        ids = torch.cat([F.pad(p, (0, length - p.shape[-1]), value=pad) for p in pieces])
        return encode_unique(lambda unique: self.text_model(unique, walk_type="short")[1], ids)

    def _roi_embeds(self, feature_map: torch.Tensor, boxes: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Normalised RoI features of every box slot: boxes [B, S, 4] normalised xyxy -> [B*S, P]."""
        grid_wh = torch.tensor([grid_hw[1], grid_hw[0]], device=boxes.device).expand(boxes.shape[0], 2)
        return normalize(roi_features(feature_map, normalized_rois(boxes, grid_wh)))

    # ------------------------------------------------------------------------------ initialisation helpers

    def stretch_long_positions(self) -> None:
        """Initialise both long tables from the short table by Long-CLIP's knowledge-preserving stretch and copy
        ``text_projection`` into ``text_filip_projection`` (the reference's ``from_openai`` step)."""
        self.text_model.embeddings.stretch_long_tables()
        with torch.no_grad():
            self.text_filip_projection.weight.copy_(self.text_projection.weight)

    # the reference's (misspelled) name
    def resize_postion_embeding(self, newsize: object = None) -> None:
        """Alias of :meth:`stretch_long_positions` (reference name; it also copied the projection separately)."""
        self.stretch_long_positions()
