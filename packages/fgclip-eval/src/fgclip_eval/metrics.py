"""Benchmark metrics, vectorised over whole similarity matrices (no Python loop over images × captions).

Conventions: similarity ``S`` is [images, texts]; ``text_to_image[j]`` is the image of text ``j`` (COCO: 5 texts
per image).

Exact ties are common in the reference protocols (FG-CLIP 2's sigmoid scores saturate at 1.0, softmax(100·s)
underflows to 0, duplicate captions and class names give identical embeddings), and the reference scripts break
them in three different ways; ``rule`` picks one, with the same result as the scripts' per-row calls on the CPU:

* ``"argsort"``: the last ``k`` of an ascending ``argsort`` (the FG-CLIP and Long-CLIP retrieval scripts);
* ``"topk"``: ``torch.topk`` (box classification, FG-CLIP ImageNet);
* ``"argmax"``: the first maximum, ``k = 1`` only (Urban1k, ImageNet-v2, Long-CLIP classification).
"""

from __future__ import annotations

import torch

RULES = ("topk", "argsort", "argmax")
_ROWS = 1024  # argsort in row chunks: the index matrix of 5k x 25k scores would take 1 GB at once


def top_indices(scores: torch.Tensor, k: int, rule: str = "topk") -> torch.Tensor:
    """[N, k] indices of the ``k`` best columns of each row of ``scores``, ties broken by ``rule``."""
    k = min(k, scores.shape[1])
    if rule == "topk":
        return scores.topk(k, dim=1).indices
    if rule == "argsort":
        if not len(scores):
            return torch.zeros(0, k, dtype=torch.long)
        return torch.cat([rows.argsort(dim=1)[:, -k:] for rows in scores.split(_ROWS)])
    if rule == "argmax":
        if k != 1:
            raise ValueError("the argmax rule ranks only the best column (k = 1)")
        return scores.argmax(dim=1, keepdim=True)
    raise ValueError(f"unknown ranking rule {rule!r} (one of {RULES})")


def image_to_text_recall(
    similarity: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10), rule: str = "topk"
) -> dict[int, float]:
    """I2T R@k: image ``i`` is a hit when any of its texts is among the k most similar texts of row ``i``."""
    n_images = similarity.shape[0]
    out = {}
    for k in ks:
        top = top_indices(similarity, k, rule)  # [I, k]
        hit = (text_to_image[top] == torch.arange(n_images, device=similarity.device)[:, None]).any(dim=1)
        out[k] = hit.float().mean().item()
    return out


def text_to_image_recall(
    similarity: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10), rule: str = "topk"
) -> dict[int, float]:
    """T2I R@k: text ``j`` is a hit when its image is among the k most similar images of column ``j``."""
    out = {}
    for k in ks:
        top = top_indices(similarity.T, k, rule)  # [T, k]
        out[k] = (top == text_to_image[:, None]).any(dim=1).float().mean().item()
    return out


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5), rule: str = "topk") -> dict[int, float]:
    """Classification top-k accuracy of [N, C] scores against [N] labels (``rule="argmax"``: top-1 by the first
    maximum, the other ks by ``topk``)."""
    out = {}
    for k in ks:
        top = top_indices(logits, k, rule if k == 1 or rule != "argmax" else "topk")
        out[k] = (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


def first_is_best(scores: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """FG-OVD / hard-negative accuracy: the share of rows whose candidate 0 (the positive) scores at least as high
    as every other real candidate (exact ties count as correct, as the reference)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores[:, 0] >= scores.max(dim=1).values).float().mean().item()


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """[C, C] counts (rows: target, columns: prediction) of the pixels whose target is not ``ignore_index``."""
    keep = target != ignore_index
    index = target[keep].long() * num_classes + predicted[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mIoU over the classes that occur in target or prediction, per-class IoU with NaN for absent classes)."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))
    return torch.nanmean(iou).item(), iou
