"""Loss terms of FG-CLIP / Long-CLIP training as pure functions of (already normalised) embeddings.

Nothing here talks to ``torch.distributed``: the caller gathers features (see :mod:`fgclip_model.distributed`)
and passes the local rows, the gathered rows and the offset of the local rows in the gathered batch.
All losses are computed in float32 whatever the feature dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# ------------------------------------------------------------------------------------------------ FG-CLIP 2 terms


def sigmoid_loss(
    image_local: torch.Tensor,
    text_all: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    offset: int = 0,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss of the local images against all (gathered) texts.

    ``ℓ_ij = s·⟨x_i, y_j⟩ + b``; label +1 for ``j == offset + i``, −1 otherwise;
    ``L = −(1/b) Σ_ij log σ(z_ij ℓ_ij)`` with ``b`` the local batch size. Only texts need gathering.
    """
    logits = logit_scale.float() * image_local.float() @ text_all.float().T + logit_bias.float()
    rows = torch.arange(image_local.shape[0], device=logits.device)
    labels = -torch.ones_like(logits)
    labels[rows, rows + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / image_local.shape[0]


def text_intra_contrastive_loss(
    text: torch.Tensor, valid: torch.Tensor, top_k: int = 10, duplicate_threshold: float = 0.95
) -> torch.Tensor:
    """FG-CLIP 2's TIC loss on region-text embeddings ``text`` [N, P] over the ``valid`` [N] slots.

    Similarities ``T Tᵀ`` with the diagonal and near-duplicates (> ``duplicate_threshold``) set to 0 (they stay
    selectable, as in the reference); per row, ``log Σ exp`` of the ``top_k`` largest among the valid columns;
    mean over valid rows. With fewer than ``top_k`` valid texts only the available ones enter the sum (the
    reference's ``topk`` raised there and the loss was silently dropped).
    """
    sim = text.float() @ text.float().T
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye | (sim > duplicate_threshold), 0.0)
    sim = sim.masked_fill(~valid[None, :], float("-inf"))
    k = min(top_k, sim.shape[1])
    per_row = torch.logsumexp(sim.topk(k, dim=1).values, dim=1)
    per_row = torch.where(valid, per_row, torch.zeros_like(per_row))
    return per_row.sum() / valid.sum().clamp(min=1)


@dataclass
class HardNegativeTerms:
    """FG-CLIP 2 hard-negative terms and the statistics for the next step's rank margin."""

    itc: torch.Tensor
    pair: torch.Tensor
    rank: torch.Tensor
    margin_estimate: torch.Tensor  # mean positive − mean negative score (detached, logit units)


def fgclip2_hard_negative_terms(
    region: torch.Tensor,
    candidates: torch.Tensor,
    logit_scale: torch.Tensor,
    margin: torch.Tensor | float,
    candidate_mask: torch.Tensor | None = None,
) -> HardNegativeTerms:
    """In-batch hard ITC, per-box (1+K)-way CE and the cross-modal rank loss of FG-CLIP 2.

    ``region`` [H, P]; ``candidates`` [H, K1, P] with the positive first (all normalised); ``candidate_mask``
    [H, K1] marks real candidates. With scores ``s = logit_scale·⟨r, c⟩``:

    * ``itc``: image→text CE over every box's positive and negatives ([H, H·K1] logits, target = own
      positive), text→image CE of the positives against the regions, averaged;
    * ``pair``: CE of each box over its own candidates, target 0;
    * ``rank``: mean over real negatives of ``max(0, margin + s⁻ − s⁺)``.
    """
    num, k1, _ = candidates.shape
    if candidate_mask is None:
        candidate_mask = torch.ones(num, k1, dtype=torch.bool, device=region.device)
    scale = logit_scale.float()
    r, c = region.float(), candidates.float()
    positives = c[:, 0]
    negatives, negative_mask = c[:, 1:], candidate_mask[:, 1:]
    targets = torch.arange(num, device=region.device)

    columns = torch.cat([positives, negatives.reshape(-1, c.shape[-1])])  # [H + H·K, P]
    column_mask = torch.cat([torch.ones(num, dtype=torch.bool, device=r.device), negative_mask.reshape(-1)])
    i2t = (scale * r @ columns.T).masked_fill(~column_mask[None], float("-inf"))
    t2i = scale * positives @ r.T
    itc = (F.cross_entropy(i2t, targets) + F.cross_entropy(t2i, targets)) / 2

    scores = scale * torch.einsum("hp,hkp->hk", r, c)
    pair = F.cross_entropy(scores.masked_fill(~candidate_mask, float("-inf")), torch.zeros_like(targets))

    s_pos, s_neg = scores[:, :1], scores[:, 1:]
    hinge = (margin + s_neg - s_pos).clamp(min=0)
    count = negative_mask.sum().clamp(min=1)
    rank = (hinge * negative_mask).sum() / count
    with torch.no_grad():
        margin_estimate = s_pos.mean() - (s_neg * negative_mask).sum() / count
    return HardNegativeTerms(itc, pair, rank, margin_estimate)


# ------------------------------------------------------------------------------------------------ Long-CLIP terms


def principal_reconstruction(features: torch.Tensor, k: int = 32) -> torch.Tensor:
    """Long-CLIP's "coarse" features: each row rebuilt from the top-``k`` principal directions of the batch.

    ``X = features − mean``; thin SVD ``X = U S Vᵀ``; returns ``X V_k V_kᵀ + mean`` (float32, not re-normalised).
    With ``k ≥ rank(X)`` (e.g. a batch of at most k + 1 rows) this is the input itself.
    """
    x = features.float()
    mean = x.mean(dim=0, keepdim=True)
    centred = x - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[:k].T  # [E, k]
    return centred @ basis @ basis.T + mean


def pcm_losses(
    image_local: torch.Tensor,
    long_local: torch.Tensor,
    short_local: torch.Tensor,
    coarse_local: torch.Tensor,
    gathered: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    offset: int = 0,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primary Component Matching (Long-CLIP): (long loss, short loss).

    Long captions align with the full image features; short captions with the ``coarse`` (principal-component)
    image features. ``gathered`` holds the rows of every rank: ``image``, ``long``, ``short``, ``coarse``.
    """
    loss_long = contrastive_loss(
        image_local, long_local, gathered["image"], gathered["long"], logit_scale, offset, label_smoothing
    )
    loss_short = contrastive_loss(
        coarse_local, short_local, gathered["coarse"], gathered["short"], logit_scale, offset, label_smoothing
    )
    return loss_long, loss_short
