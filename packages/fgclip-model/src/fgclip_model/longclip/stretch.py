"""Knowledge-preserving stretching (Long-CLIP): a 77-row position table -> a 248-row one."""

from __future__ import annotations

import torch


def stretched_length(length: int = 77, ratio: int = 4, keep: int = 20) -> int:
    """``ratio·length − (ratio−1)·keep`` (248 for the defaults)."""
    return ratio * length - (ratio - 1) * keep


def stretch_positions(table: torch.Tensor, new_length: int = 248, keep: int = 20) -> torch.Tensor:
    """Stretch a position table [N, D] to [new_length, D], Long-CLIP style (knowledge-preserving stretching).

    Rows ``0..keep-1`` are copied. Row ``j ≥ keep`` is the linear interpolant of the table at fractional
    position ``keep + (j − keep)/ratio`` with ``ratio = (new_length − keep) / (N − keep)``, the last segment
    extended past the final row (for 77 → 248: ratio 4, rows 244..247 extrapolate ``P[76] + r/4·(P[76] − P[75])``).
    Computed in at least float32 (the reference used fp16) and returned in the table's dtype.
    """
    length, _ = table.shape
    if not 0 < keep < length:
        raise ValueError(f"keep={keep} must be in 1..{length - 1}")
    if (new_length - keep) % (length - keep):
        raise ValueError(
            f"new_length={new_length} is not keep + ratio·(N − keep) for an integer ratio (N={length}, keep={keep})"
        )
    ratio = (new_length - keep) // (length - keep)
    dtype = torch.promote_types(table.dtype, torch.float32)
    source = table.to(dtype)
    j = torch.arange(new_length - keep, dtype=dtype, device=table.device)
    lower = (keep + torch.div(j, ratio, rounding_mode="floor")).long().clamp(max=length - 2)
    alpha = (keep + j / ratio - lower)[:, None]
    tail = (1 - alpha) * source[lower] + alpha * source[lower + 1]
    return torch.cat([source[:keep], tail]).to(table.dtype)
