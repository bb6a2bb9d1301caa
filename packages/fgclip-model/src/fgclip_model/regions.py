"""Region (RoI) features on a dense patch-feature map.

All functions are vectorised over boxes: boxes of a whole batch go through one ``roi_align`` call.
Conventions (FG-CLIP): boxes are ``x1, y1, x2, y2``; ``aligned=True`` puts the centre of patch (r, c) at grid
point (c + 0.5, r + 0.5) before the half-pixel shift, so the box ``[c, r, c+1, r+1]`` in grid units is exactly
patch (r, c) and the full-grid box is the mean of all patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import roi_align


def dense_to_map(dense: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """[B, h*w, P] row-major patch features -> [B, P, h, w]."""
    b, n, p = dense.shape
    h, w = grid_hw
    if h * w != n:
        raise ValueError(f"dense features have {n} tokens, which is not a {h}x{w} grid")
    return dense.transpose(1, 2).reshape(b, p, h, w)


def boxes_with_batch_index(boxes: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Per-image [n_i, 4] boxes (or an indexed [K, 5] tensor) -> [K, 5] (batch_idx, x1, y1, x2, y2)."""
    if isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"a box tensor must be [K, 5] (batch index, x1, y1, x2, y2), got {tuple(boxes.shape)}")
        return boxes
    for i, b in enumerate(boxes):
        if b.ndim != 2 or b.shape[-1] != 4:
            raise ValueError(f"boxes of image {i} must be [n, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
    if not boxes:
        return torch.zeros(0, 5)
    flat = torch.cat(list(boxes))
    index = torch.repeat_interleave(
        torch.arange(len(boxes), device=flat.device), torch.tensor([len(b) for b in boxes], device=flat.device)
    )
    return torch.cat([index[:, None].to(flat.dtype), flat], dim=1)


def check_boxes(boxes_xyxy: torch.Tensor, what: str = "box") -> None:
    """Raise a clear error for boxes with x1 > x2 or y1 > y2 (the reference crashes a data worker on these)."""
    bad = (boxes_xyxy[:, 2] < boxes_xyxy[:, 0]) | (boxes_xyxy[:, 3] < boxes_xyxy[:, 1])
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what} {k} has x2 < x1 or y2 < y1: {boxes_xyxy[k].tolist()} (expected x1, y1, x2, y2)")


def roi_features(feature_map: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Average each RoI ([K, 5], grid units) of a [B, P, h, w] map with RoIAlign (1x1 output) -> [K, P].

    Runs in float32 (as the reference) and returns the feature map's dtype.
    """
    out = roi_align(
        feature_map.float(),
        rois.to(device=feature_map.device, dtype=torch.float32),
        output_size=(1, 1),
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )
    return out[:, :, 0, 0].to(feature_map.dtype)


def normalized_to_grid(boxes: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Scale normalised xyxy boxes in [0, 1] to feature-grid units of an h x w grid."""
    h, w = grid_hw
    scale = boxes.new_tensor([w, h, w, h])
    return boxes[..., :4] * scale


def pixels_to_normalized(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """xyxy pixel boxes on an image of (height, width) -> normalised [0, 1] boxes."""
    h, w = image_hw
    return boxes[..., :4] / boxes.new_tensor([w, h, w, h])


def normalized_rois(
    boxes: torch.Tensor | Sequence[torch.Tensor], grid_wh: torch.Tensor, clip: bool = False
) -> torch.Tensor:
    """RoIs [K, 5] (batch index, grid-unit xyxy) for normalised xyxy boxes of a batch, in one vectorised step.

    ``boxes``: [B, S, 4] slots or a list of B [n_i, 4] tensors; ``grid_wh``: [B, 2] feature-grid (width, height)
    of each image; ``clip`` clamps the boxes to the image first.
    """
    per_image = list(boxes.unbind(0)) if isinstance(boxes, torch.Tensor) else list(boxes)
    device = grid_wh.device
    counts = torch.tensor([len(b) for b in per_image], device=device)
    flat = torch.cat([b.reshape(-1, 4) for b in per_image]).to(device=device, dtype=torch.float32)
    if clip:
        flat = flat.clamp(0, 1)
    index = torch.repeat_interleave(torch.arange(len(per_image), device=device), counts)
    scale = grid_wh.to(torch.float32)[index].repeat(1, 2)
    return torch.cat([index[:, None].to(torch.float32), flat * scale], dim=1)
