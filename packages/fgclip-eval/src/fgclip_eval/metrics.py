"""Benchmark metrics, vectorised over whole similarity matrices (no Python loop over images × captions).

Conventions: similarity ``S`` is [images, texts]; ``text_to_image[j]`` is the image of text ``j`` (COCO: 5 texts
per image). Ties are broken like ``torch.topk`` / ``argmax`` (the reference scripts' behaviour).
"""

from __future__ import annotations

import torch


def image_to_text_recall(similarity: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """I2T R@k: image ``i`` is a hit when any of its texts is among the k most similar texts of row ``i``."""
    n_images = similarity.shape[0]
    out = {}
    for k in ks:
        top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # [I, k]
        hit = (text_to_image[top] == torch.arange(n_images, device=similarity.device)[:, None]).any(dim=1)
        out[k] = hit.float().mean().item()
    return out


def text_to_image_recall(similarity: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """T2I R@k: text ``j`` is a hit when its image is among the k most similar images of column ``j``."""
    out = {}
    for k in ks:
        top = similarity.topk(min(k, similarity.shape[0]), dim=0).indices  # [k, T]
        out[k] = (top == text_to_image[None, :]).any(dim=0).float().mean().item()
    return out


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Classification top-k accuracy of [N, C] scores against [N] labels."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


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
