"""FG-Shapes' evaluation definitions, shared by training-time validation (fgclip-train) and the benchmark
(fgclip-eval), so both report the same numbers for the same features.

* box classification: the 40 classes are ``"<colour> <shape>"``; a box's class is read from its short region
  caption (``"a <size> <colour> <shape> ..."``); accuracy is the share of boxes whose best-scoring class prompt
  (``"a <colour> <shape>"``) is theirs (first maximum on ties);
* hard negatives: a box is right when its true caption (candidate 0) scores at least as high as every one of its
  rewrites (exact ties count as right, as FG-OVD counts them);
* hard negatives by attribute: for each attribute a rewrite can change (colour, shape, size, position), the share
  of (box, rewrite) pairs changing it in which the true caption scores at least as high — which attribute the
  region features fail to bind;
* retrieval: R@1 both ways on a square similarity matrix whose diagonal holds the pairs (first maximum on ties).
"""

from __future__ import annotations

import torch


def classes(vocabulary: dict) -> list[str]:
    """The box classes of an FG-Shapes manifest's ``vocabulary``: every colour with every shape."""
    return [f"{c} {s}" for c in vocabulary["colors"] for s in vocabulary["shapes"]]


def class_prompts(names: list[str]) -> list[str]:
    return [f"a {name}" for name in names]


ATTRIBUTE_KINDS = ("color", "shape", "size", "position")


def caption_attributes(short_expr: str) -> dict[str, str] | None:
    """The attributes named by a short region caption ``"a <size> <colour> <shape> <position>"``, None if it has
    fewer words."""
    w = short_expr.split()
    return {"size": w[1], "color": w[2], "shape": w[3], "position": " ".join(w[4:])} if len(w) >= 5 else None


def box_class(short_expr: str, names: list[str]) -> int:
    """The class index of a box from its short region caption (``"a small red circle on the left"``), -1 if none."""
    name = " ".join(short_expr.split()[2:4])
    return names.index(name) if name in names else -1


def box_classification_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of boxes [N] whose best class in ``scores`` [N, C] is ``labels``."""
    return (scores.argmax(dim=1) == labels.to(scores.device)).float().mean().item()


def hard_negative_accuracy(scores: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of rows of ``scores`` [N, K] whose candidate 0 is at least as high as every other real candidate
    (``mask`` [N, K] marks the real ones when rows have different numbers of rewrites)."""
    if mask is not None:
        scores = scores.masked_fill(~mask.to(scores.device), float("-inf"))
    return (scores[:, 0] >= scores.max(dim=1).values).float().mean().item()


def recall_at_1(similarity: torch.Tensor) -> tuple[float, float]:
    """(image→text, text→image) R@1 of a square similarity matrix whose diagonal holds the pairs."""
    target = torch.arange(similarity.shape[0], device=similarity.device)
    i2t = (similarity.argmax(dim=1) == target).float().mean().item()
    t2i = (similarity.argmax(dim=0) == target).float().mean().item()
    return i2t, t2i


def changed_attribute(truth: str, rewrite: str) -> str | None:
    """Which attribute a hard-negative rewrite of a short region caption changes (``"size"``, ``"color"``,
    ``"shape"`` or ``"position"``); None when it is not a one-attribute rewrite."""
    a, b = caption_attributes(truth), caption_attributes(rewrite)
    if a is None or b is None:
        return None
    diff = [k for k in ATTRIBUTE_KINDS if a[k] != b[k]]
    return diff[0] if len(diff) == 1 else None


def hard_negative_win_rates(scores: torch.Tensor, kinds: list[list[str | None]]) -> dict[str, float]:
    """Per attribute, the share of (box, rewrite) pairs whose true caption (column 0 of ``scores`` [N, K]) scores
    at least as high as the rewrite (column j + 1, changing ``kinds[i][j]``)."""
    wins = scores[:, :1] >= scores[:, 1:]
    codes = torch.tensor(
        [[ATTRIBUTE_KINDS.index(k) if k in ATTRIBUTE_KINDS else -1 for k in row] for row in kinds],
        device=scores.device,
    ).reshape(wins.shape)
    return {
        kind: wins[codes == i].double().mean().item() for i, kind in enumerate(ATTRIBUTE_KINDS) if (codes == i).any()
    }
