"""Transformer building blocks shared by the CLIP-style towers (FG-CLIP v1 text and vision, FG-CLIP 2).

Module and parameter names follow the checkpoint keys (``self_attn.{q,k,v,out}_proj``, ``layer_norm1``,
``mlp.fc1`` ...), so the towers load released state dicts unchanged. Attention follows transformers' attention
interface: the tower config's ``_attn_implementation`` picks ``"sdpa"`` (the default,
``torch.nn.functional.scaled_dot_product_attention``: flash / memory-efficient kernels on GPU), ``"eager"``
(explicit softmax, the weights returned) or another function registered in ``ALL_ATTENTION_FUNCTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = attend) as an additive float mask; float masks pass through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def pack_left(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int | None = None, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text in the canonical layout: each row's real tokens (``attention_mask`` 1) moved to the front in their order,
    ``pad_id`` after them, and the mask to match; whatever side or length the caller padded to.

    ``length``: the width to pad to (rows wider than it are cut to it when every row's real tokens fit). Pure
    tensor ops (a scatter), so it traces and exports.
    """
    real = attention_mask.bool()
    width = input_ids.shape[-1]
    if length is not None and width < length:
        input_ids = F.pad(input_ids, (0, length - width), value=pad_id)
        real = F.pad(real, (0, length - width), value=False)
        width = length
    count = real.sum(-1, keepdim=True)
    slot = torch.where(real, real.cumsum(-1) - 1, count + (~real).cumsum(-1) - 1)  # a permutation of each row
    packed = torch.empty_like(input_ids).scatter(-1, slot, input_ids)
    keep = torch.arange(width, device=input_ids.device) < count
    packed = packed.masked_fill(~keep, pad_id)
    if length is not None and width > length and int(count.max()) <= length:
        packed, keep = packed[:, :length], keep[:, :length]
    return packed, keep.to(attention_mask.dtype)


def pack_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    length: int | None = None,
    pad_id: int = 0,
    padding_side: str = "right",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pack_left` with the padding on ``padding_side``: ``"right"`` (real tokens first) or ``"left"`` (real
    tokens last, as a left-padding tokenizer lays them out)."""
    if padding_side == "right":
        return pack_left(input_ids, attention_mask, length, pad_id)
    if padding_side != "left":
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    ids, mask = pack_left(input_ids.flip(-1), attention_mask.flip(-1), length, pad_id)
    return ids.flip(-1), mask.flip(-1)


def encode_unique(encode: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """``encode(ids)`` computed once per distinct row of ``ids`` [N, L] (a stage-2 batch repeats many texts:
    a flagged box's positive is also its box caption, and the same negatives recur across boxes and images);
    rows of the result are the distinct rows' features, so gradients of repeated rows add up as they would."""
    unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
    if unique.shape[0] == ids.shape[0]:
        return encode(ids)
    return encode(unique)[inverse]


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q·kᵀ·scaling + mask)·v`` -> (output [B, L, H, d], weights [B, H, L, S])."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if is_causal and attention_mask is None:
        attention_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        weights = weights + additive_mask(attention_mask, weights.dtype)
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


def sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    is_causal: bool = False,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """PyTorch's fused attention (boolean or additive masks) -> (output [B, L, H, d], None)."""
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        is_causal=is_causal and attention_mask is None,
        scale=scaling,
    )
    return out.transpose(1, 2), None


OWN_ATTENTION: dict[str, Callable] = {"eager": eager_attention, "sdpa": sdpa_attention}


def attention_function(implementation: str | None, need_weights: bool) -> tuple[Callable, bool]:
    """(function, takes boolean masks) for a config's ``_attn_implementation`` (None = sdpa). SDPA does not
    expose its weights, so a call that needs them runs eager."""
    implementation = implementation or "sdpa"
    if need_weights and implementation == "sdpa":
        implementation = "eager"
    if implementation in OWN_ATTENTION:
        return OWN_ATTENTION[implementation], True
    if implementation not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"attn_implementation {implementation!r} is not available (eager, sdpa or one of "
            f"{list(ALL_ATTENTION_FUNCTIONS.valid_keys())})"
        )
    return ALL_ATTENTION_FUNCTIONS[implementation], False


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (HF CLIP / SigLIP key layout)."""

    def __init__(self, config) -> None:
        super().__init__()
        hidden_size, num_heads = config.hidden_size, config.num_attention_heads
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")
        self.config = config  # read at each call: set_attn_implementation changes it in place
        self.embed_dim = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        output_attentions: bool = False,
        query_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``attn_mask``: boolean (True = attend) or additive float, broadcastable to [B, heads, Q, L].
        ``query_states`` [B, Q, D]: the positions that ask (default: all of ``hidden_states``, Q = L); every position
        of ``hidden_states`` answers. Returns (output [B, Q, D], attention weights [B, heads, Q, L] when asked)."""
        if query_states is None:
            query_states = hidden_states

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(query_states))
        k = heads(self.k_proj(hidden_states))
        v = heads(self.v_proj(hidden_states))
        function, takes_bool = attention_function(self.config._attn_implementation, output_attentions)
        out, weights = function(
            self,
            q,
            k,
            v,
            attn_mask if takes_bool else additive_mask(attn_mask, q.dtype),
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        out = self.out_proj(out.reshape(*query_states.shape[:2], self.embed_dim))
        return out, (weights if output_attentions else None)

    def value_path(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Attention with every token attending only to itself: ``out_proj(v_proj(x))`` (dense-feature trick)."""
        return self.out_proj(self.v_proj(hidden_states))


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str) -> None:
        super().__init__()
        self.activation_fn = ACT2FN[hidden_act]
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class EncoderLayer(GradientCheckpointingLayer):
    """Pre-LN transformer block: ``h += attn(LN1(h)); h += mlp(LN2(h))``."""

    def __init__(self, config) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the block's output, its attention weights when asked)."""
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), attn_mask, is_causal, output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.layer_norm2(hidden_states)), weights

    def at_positions(
        self, hidden_states: torch.Tensor, positions: slice, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The block's output at ``hidden_states[:, positions]`` only, every position still a key and value: for
        bidirectional attention the same as ``forward(hidden_states, attn_mask)[0][:, positions]``, without the
        queries, attention rows and MLP of the positions nobody reads (a tower pooled at one position)."""
        normed = self.layer_norm1(hidden_states)
        attended, _ = self.self_attn(normed, attn_mask, query_states=normed[:, positions])
        hidden_states = hidden_states[:, positions] + attended
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))

    def forward_without_attention(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The block with self-attention replaced by the per-token value path (no token mixing).

        This is how FG-CLIP and FG-CLIP 2 turn the last vision block into a dense, per-patch feature extractor.
        """
        hidden_states = hidden_states + self.self_attn.value_path(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` (checkpoint key ``encoder.layers.{i}``) built from a tower config."""

    def __init__(self, config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        layers: slice = slice(None),
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutput:
        """Run ``self.layers[layers]`` (all by default). ``hidden_states`` holds the input and every layer's
        output when asked (transformers' convention), ``attentions`` every layer's weights."""
        states = (hidden_states,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers[layers]:
            hidden_states, weights = layer(hidden_states, attn_mask, is_causal, output_attentions)
            if output_hidden_states:
                states += (hidden_states,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=states, attentions=attentions)


class WalkTextEmbeddings(nn.Module):
    """Token embedding plus one of the position walks of FG-CLIP (v1 and 2).

    * ``short`` / ``box``: rows of ``position_embedding`` (77 rows in v1, 64 in FG-CLIP 2);
    * ``long``: rows ``0..keep-1`` of ``position_embedding_ori`` then rows ``keep..`` of ``position_embedding_res``
      (248 / 196 rows; the other rows of both tables are unused but kept for checkpoint compatibility).

    Any length up to the walk's table works (the references need exactly the long-table length).
    """

    def __init__(
        self, vocab_size: int, hidden_size: int, short_positions: int, long_positions: int, keep_positions: int
    ) -> None:
        super().__init__()
        self.keep_positions = keep_positions
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Embedding(short_positions, hidden_size)
        self.position_embedding_res = nn.Embedding(long_positions, hidden_size)
        self.position_embedding_ori = nn.Embedding(long_positions, hidden_size)

    def init_tables(self, std: float) -> None:
        """Normal(0, ``std``) initialisation of the token table and the three position tables."""
        for table in (
            self.token_embedding,
            self.position_embedding,
            self.position_embedding_res,
            self.position_embedding_ori,
        ):
            init.normal_(table.weight, std=std)

    @torch.no_grad()
    def stretch_long_tables(self) -> None:
        """Fill both long tables from the short table by Long-CLIP's knowledge-preserving stretch."""
        from fgclip_model.longclip.stretch import stretch_positions

        table = stretch_positions(
            self.position_embedding.weight, self.position_embedding_res.num_embeddings, self.keep_positions
        )
        self.position_embedding_res.weight.copy_(table)
        self.position_embedding_ori.weight.copy_(table)

    def max_length(self, walk_type: str) -> int:
        table = self.position_embedding_res if walk_type == "long" else self.position_embedding
        return table.num_embeddings

    def position_table(self, walk_type: str, length: int) -> torch.Tensor:
        """The [length, D] position rows of a walk."""
        limit = self.max_length(walk_type)
        if length > limit:
            raise ValueError(
                f"{walk_type} text has {length} tokens but the {walk_type} walk has {limit} positions; "
                f"truncate it (the processor does) or use walk_type='long' (up to "
                f"{self.position_embedding_res.num_embeddings} tokens)"
            )
        if walk_type != "long":
            return self.position_embedding.weight[:length]
        keep = min(length, self.keep_positions)
        return torch.cat([self.position_embedding_ori.weight[:keep], self.position_embedding_res.weight[keep:length]])

    def forward(self, input_ids: torch.Tensor, walk_type: str) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_table(walk_type, input_ids.shape[-1])
