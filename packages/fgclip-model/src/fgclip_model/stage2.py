"""The stage-2 training batch, parsed and validated once for every family's loss.

The layout is the reference collators' (fgclip-data's collators produce it), for a batch of B images:

* ``text_short`` [B, Ls] — the short captions; ``text_long`` [B, Ll] (optional) — the long captions;
* region alignment: ``box_infos`` [B, S_b, 4] (or [B·S_b, 4]) normalised xyxy box slots, zero padded,
  ``box_nums`` [B] the real slots per image (first ``box_nums[b]``), ``box_texts`` [B·S_b, Ls] their captions;
* hard negatives: ``hard_infos`` [B, S_h, 4] with the flagged boxes packed to the front, ``hard_nums`` [B], and
  ``hard_texts`` [H, K, Ls] — or flat [H·K, Ls], the reference's layout, which costs one host sync — for the
  H = Σ hard_nums boxes in image order, each the positive then K-1 negatives; ``hard_text_mask`` [H, K] marks
  the real candidates when boxes have fewer negatives.

Which losses run is a loss setting (:class:`Stage2Losses`), not part of the batch; the reference's batch flags
``add_box_loss`` / ``use_hard_neg`` are still read for compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stage2Losses:
    """Which local losses a step computes: region alignment (``regions``) and hard negatives (``hard``)."""

    regions: bool = True
    hard: bool = True


@dataclass
class Stage2Batch:
    """A validated stage-2 batch (see the module docstring for the layout it is parsed from)."""

    batch_size: int
    text_short: torch.Tensor
    text_long: torch.Tensor | None = None
    boxes: torch.Tensor | None = None  # [B, S_b, 4]
    box_texts: torch.Tensor | None = None  # [B·S_b, Ls]
    box_valid: torch.Tensor | None = None  # [B·S_b] bool: real slots
    hard_boxes: torch.Tensor | None = None  # [B, S_h, 4]
    hard_order: torch.Tensor | None = None  # [H] indices of the real hard slots in [B·S_h], image-major
    hard_texts: torch.Tensor | None = None  # [H·K, Ls]
    hard_mask: torch.Tensor | None = None  # [H, K] bool, or None when every box has K candidates
    num_hard: int = 0
    candidates: int = 0

    @property
    def has_regions(self) -> bool:
        return self.boxes is not None

    @property
    def has_hard(self) -> bool:
        return self.num_hard > 0

    def short_pieces(self) -> list[torch.Tensor]:
        """Every short-walk id batch of the step — captions, box captions, hard candidates — for one tower call."""
        pieces = [self.text_short]
        if self.has_regions:
            pieces.append(self.box_texts)
        if self.has_hard:
            pieces.append(self.hard_texts)
        return pieces

    @classmethod
    def parse(
        cls,
        batch_size: int,
        text_short: torch.Tensor,
        text_long: torch.Tensor | None = None,
        box_infos: torch.Tensor | None = None,
        box_texts: torch.Tensor | None = None,
        box_nums: torch.Tensor | None = None,
        hard_infos: torch.Tensor | None = None,
        hard_texts: torch.Tensor | None = None,
        hard_nums: torch.Tensor | None = None,
        hard_text_mask: torch.Tensor | None = None,
        losses: Stage2Losses = Stage2Losses(),
    ) -> Stage2Batch:
        """Parse the collators' tensors; the parts of losses that ``losses`` turns off are left out. Shapes are
        checked with errors naming the tensor; nothing syncs with the device except flat ``hard_texts``."""
        if text_short.ndim != 2 or text_short.shape[0] != batch_size:
            raise ValueError(f"text_short must be [{batch_size}, L], got {tuple(text_short.shape)}")
        if text_long is not None and (text_long.ndim != 2 or text_long.shape[0] != batch_size):
            raise ValueError(f"text_long must be [{batch_size}, L], got {tuple(text_long.shape)}")
        out = cls(batch_size, text_short, text_long)
        device = text_short.device
        if losses.regions:
            if box_infos is None or box_texts is None or box_nums is None:
                raise ValueError("the region loss needs box_infos, box_texts and box_nums (or losses.regions=False)")
            out.boxes = _slots(box_infos, batch_size, "box_infos")
            out.box_texts = box_texts.reshape(-1, box_texts.shape[-1])
            if out.box_texts.shape[0] != out.boxes.shape[0] * out.boxes.shape[1]:
                raise ValueError(
                    f"box_texts has {out.box_texts.shape[0]} rows for {batch_size} x {out.boxes.shape[1]} box slots"
                )
            out.box_valid = first_slots(out.boxes.shape[1], box_nums, batch_size, device)
        if losses.hard and hard_texts is not None and hard_texts.numel():
            if hard_infos is None or hard_nums is None:
                raise ValueError("hard_texts were given without hard_infos and hard_nums")
            out.num_hard, out.candidates, out.hard_texts = _hard_layout(hard_texts, hard_nums)
            out.hard_boxes = _slots(hard_infos, batch_size, "hard_infos")
            valid = first_slots(out.hard_boxes.shape[1], hard_nums, batch_size, device)
            # indices of the valid slots in image-major order, with a static count (no nonzero() sync)
            out.hard_order = torch.sort(valid.int(), descending=True, stable=True).indices[: out.num_hard]
            if hard_text_mask is not None:
                out.hard_mask = hard_text_mask.reshape(out.num_hard, out.candidates).bool()
        return out


def resolve_losses(
    losses: Stage2Losses | None,
    add_box_loss: bool | None = None,
    use_hard_neg: bool | None = None,
    box_infos: torch.Tensor | None = None,
    hard_texts: torch.Tensor | None = None,
) -> Stage2Losses:
    """The losses of a step: ``losses`` when given; else the reference's flags; else what the batch provides."""
    if losses is not None:
        if add_box_loss is not None or use_hard_neg is not None:
            raise ValueError(
                "pass losses=Stage2Losses(...) or the reference flags add_box_loss / use_hard_neg, not both"
            )
        return losses
    return Stage2Losses(
        regions=bool(add_box_loss) if add_box_loss is not None else box_infos is not None,
        hard=bool(use_hard_neg) if use_hard_neg is not None else hard_texts is not None,
    )


def first_slots(slots: int, nums: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """[B·S] mask of the first ``nums[b]`` slots of every image."""
    return (torch.arange(slots, device=device)[None, :] < nums.reshape(batch, 1).to(device)).flatten()


def _slots(infos: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """[B, S, 4] box slots from [B, S, ≥4] or [B·S, ≥4] (extra columns, e.g. a detector score, dropped)."""
    if infos.shape[-1] < 4 or infos.numel() % (batch * infos.shape[-1]):
        raise ValueError(f"{name} must be [{batch}, S, 4] or [{batch}·S, 4], got {tuple(infos.shape)}")
    return infos.reshape(batch, -1, infos.shape[-1])[..., :4]


def _hard_layout(hard_texts: torch.Tensor, hard_nums: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """(H, K, [H·K, L] ids) from [H, K, L] hard texts, or flat [H·K, L] with H = Σ hard_nums (one host sync)."""
    if hard_texts.ndim == 3:
        return hard_texts.shape[0], hard_texts.shape[1], hard_texts.reshape(-1, hard_texts.shape[-1])
    num_hard = int(hard_nums.sum())
    if num_hard == 0 or hard_texts.shape[0] % num_hard:
        raise ValueError(
            f"{hard_texts.shape[0]} hard texts cannot be split evenly over {num_hard} hard boxes (sum of hard_nums); "
            "pass them as [H, K, L] with a hard_text_mask for uneven counts"
        )
    return num_hard, hard_texts.shape[0] // num_hard, hard_texts
