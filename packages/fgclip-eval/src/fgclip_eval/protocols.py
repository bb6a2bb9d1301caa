"""What each family's reference evaluation scripts do between features and metrics.

The published numbers came from the reference scripts, so ``benchmark`` follows them by default:

* FG-CLIP 2 (``fgclip2``): text encoded **with** the tokenizer's attention mask; retrieval and ImageNet rank
  ``sigmoid(exp(t)·cos + b)`` in float32, whose saturation at 1.0 makes ties that the ranking rule then breaks.
* FG-CLIP v1 (``fgclip``): box classification and FG-OVD score the **un-normalised** RoI features,
  ``softmax(100 · roi · textᵀ)``, whose underflow to 0 decides the top-5 among tied classes.
* CLIP / Long-CLIP: cosine similarities; classification takes the first maximum.

The ranking rules of the metrics (``argsort`` tail, ``topk``, first ``argmax``) are per benchmark, in the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fgclip_model import ModelFamily, get_model_family


@dataclass(frozen=True)
class Protocol:
    """A family's evaluation conventions (see the module docstring)."""

    sigmoid_scores: bool = False  # rank sigmoid(exp(logit_scale)·cos + logit_bias), not cos
    raw_regions: bool = False  # box scores from un-normalised RoI features
    text_attention_mask: bool = False  # pass the tokenizer's attention mask to get_text_features
    classification_rule: str = "topk"  # ImageNet-1k top-1 (ImageNet-v2 always takes the first maximum)


PROTOCOLS: dict[str, Protocol] = {}  # model family name -> protocol (register_protocol)


def register_protocol(family: ModelFamily, protocol: Protocol) -> None:
    """Evaluate the models of ``family`` (a descriptor of ``fgclip_model``'s registry) with ``protocol``."""
    PROTOCOLS[family.name] = protocol


def protocol_of(family: ModelFamily) -> Protocol:
    """The protocol registered for ``family``; the plain conventions (cosine, first maximum) otherwise."""
    return PROTOCOLS.get(family.name, Protocol())


for _name, _protocol in {
    "fgclip": Protocol(raw_regions=True),
    "fgclip2": Protocol(sigmoid_scores=True, text_attention_mask=True),
    "siglip2": Protocol(sigmoid_scores=True),
    "clip": Protocol(classification_rule="argmax"),
    "longclip": Protocol(classification_rule="argmax"),
}.items():
    register_protocol(get_model_family(_name), _protocol)


def sigmoid_scores(model: torch.nn.Module, cosine: torch.Tensor) -> torch.Tensor:
    """``sigmoid(exp(t)·cos + b)`` in float32, as FG-CLIP 2's scripts rank images and texts."""
    scale = model.logit_scale.detach().float().exp().cpu()
    bias = model.logit_bias.detach().float().cpu()
    return torch.sigmoid(cosine.float() * scale + bias)


def box_probabilities(regions: torch.Tensor, texts: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(100 · regions · textsᵀ)`` over the last dimension, as every reference box script scores;
    ``regions`` [N, D], ``texts`` [C, D] (or [N, C, D] per-row candidates with ``mask`` [N, C] marking real ones)."""
    logits = 100.0 * (regions @ texts.T if texts.dim() == 2 else torch.einsum("nd,ncd->nc", regions, texts))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.float().softmax(dim=-1)
