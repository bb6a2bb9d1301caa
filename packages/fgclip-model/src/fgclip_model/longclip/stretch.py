"""Knowledge-preserving stretching (Long-CLIP): a 77-row position table -> a 248-row one (or any longer one)."""

from __future__ import annotations

import torch


def stretched_length(length: int = 77, ratio: int = 4, keep: int = 20) -> int:
    """``ratio·length − (ratio−1)·keep`` (248 for the defaults)."""
    return ratio * length - (ratio - 1) * keep


def stretch_positions(table: torch.Tensor, new_length: int = 248, keep: int = 20) -> torch.Tensor:
    """Stretch a position table [N, D] to [new_length, D], Long-CLIP style (knowledge-preserving stretching).

    Rows ``0..keep-1`` are copied. Row ``j ≥ keep`` is the linear interpolant of the table at fractional
    position ``keep + (j − keep)/ratio`` with ``ratio = (new_length − keep) / (N − keep)`` — 4 for the paper's
    77 → 248, a fraction for other lengths (77 → 512: 492/57) — the last segment extended past the final row
    (for 77 → 248, rows 244..247 extrapolate ``P[76] + r/4·(P[76] − P[75])``). Computed in at least float32 (the
    reference used fp16) and returned in the table's dtype.
    """
    length, _ = table.shape
    if not 0 < keep < length:
        raise ValueError(f"keep={keep} must be in 1..{length - 1}")
    if new_length < length:
        raise ValueError(f"new_length={new_length} is shorter than the table's {length} rows (stretching only)")
    ratio = (new_length - keep) / (length - keep)
    dtype = torch.promote_types(table.dtype, torch.float32)
    source = table.to(dtype)
    position = keep + torch.arange(new_length - keep, dtype=torch.float64, device=table.device) / ratio
    lower = position.floor().long().clamp(max=length - 2)
    alpha = (position - lower).to(dtype)[:, None]
    tail = (1 - alpha) * source[lower] + alpha * source[lower + 1]
    return torch.cat([source[:keep], tail]).to(table.dtype)
