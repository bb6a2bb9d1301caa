"""Loss terms of FG-CLIP / Long-CLIP training as pure functions of (already normalised) embeddings.

Nothing here talks to ``torch.distributed``: the caller gathers features (see :mod:`fgclip_model.distributed`)
and passes the local rows, the gathered rows and the offset of the local rows in the gathered batch.
All losses are computed in float32 whatever the feature dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(
    image_local: torch.Tensor,
    text_local: torch.Tensor,
    image_all: torch.Tensor,
    text_all: torch.Tensor,
    logit_scale: torch.Tensor,
    offset: int = 0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE of the local rows against all (gathered) columns.

    ``logits_i2t = s * image_local @ text_all.T`` and ``logits_t2i = s * text_local @ image_all.T`` with targets
    ``offset + arange(b)``; returns ``(CE(i2t) + CE(t2i)) / 2`` (mean over local rows). ``logit_scale`` is the
    multiplicative scale ``s`` (already exponentiated).
    """
    targets = torch.arange(image_local.shape[0], device=image_local.device) + offset
    scale = logit_scale.float()
    logits_i2t = scale * image_local.float() @ text_all.float().T
    logits_t2i = scale * text_local.float() @ image_all.float().T
    return (
        F.cross_entropy(logits_i2t, targets, label_smoothing=label_smoothing)
        + F.cross_entropy(logits_t2i, targets, label_smoothing=label_smoothing)
    ) / 2


def masked_contrastive_loss(
    region: torch.Tensor, text: torch.Tensor, valid: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE between region and text embeddings over the ``valid`` slots only.

    ``region``, ``text``: [N, P]; ``valid``: [N] bool. Row k of the valid subset is the positive of column k;
    every other valid slot is a negative. Invalid slots are masked out, so the shapes stay static (no host sync):
    with one valid slot the loss is 0, with none it is 0 and carries no gradient.
    """
    scale = logit_scale.float()
    logits = scale * region.float() @ text.float().T
    valid_pair = valid[:, None] & valid[None, :]
    logits = logits.masked_fill(~valid_pair, float("-inf"))
    targets = torch.arange(region.shape[0], device=region.device)
    # rows of invalid slots are all -inf: give them a finite dummy row, then drop them from the mean
    safe = torch.where(valid[:, None], logits, torch.zeros_like(logits))
    safe_t = torch.where(valid[:, None], logits.T, torch.zeros_like(logits))
    per_row = F.cross_entropy(safe, targets, reduction="none") + F.cross_entropy(safe_t, targets, reduction="none")
    count = valid.sum().clamp(min=1)
    return (per_row * valid).sum() / (2 * count)


def hard_negative_loss(
    region: torch.Tensor,
    candidates: torch.Tensor,
    logit_scale: torch.Tensor,
    candidate_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each region against its own candidate texts, the positive at index 0.

    ``region``: [H, P]; ``candidates``: [H, K, P] (positive first, then K-1 negatives); ``candidate_mask``:
    optional [H, K] bool for boxes with fewer negatives (padding slots are ignored). Mean over the H regions;
    0 when H == 0.
    """
    if region.shape[0] == 0:
        return region.float().sum() * 0.0
    logits = logit_scale.float() * torch.einsum("hp,hkp->hk", region.float(), candidates.float())
    if candidate_mask is not None:
        logits = logits.masked_fill(~candidate_mask, float("-inf"))
    targets = torch.zeros(region.shape[0], dtype=torch.long, device=region.device)
    return F.cross_entropy(logits, targets)


def normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise the last dimension; a zero vector stays zero (no 0/0 NaN)."""
    return F.normalize(x, dim=-1, eps=eps)
