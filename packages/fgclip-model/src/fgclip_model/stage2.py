"""The stage-2 training contract of the FG-CLIP models: the batch they read, the loss weights, the loss switches.

A batch is any object with the attributes of :class:`Stage2Inputs` (fgclip-data's collators emit
``fgclip_data.Stage2Batch``; this package does not import it). For B images:

* ``pixel_values`` (with ``pixel_attention_mask`` and ``spatial_shapes`` for NaFlex models);
* ``text_short`` [B, Ls] — the short captions; ``text_long`` [B, Ll] (optional) — the long captions;
* region alignment: ``box_infos`` [B, S_b, 4] (or [B·S_b, 4]) normalised xyxy box slots, zero padded,
  ``box_nums`` [B] the real slots per image (first ``box_nums[b]``), ``box_texts`` [B·S_b, Ls] their captions;
* hard negatives: ``hard_infos`` [B, S_h, 4] with the flagged boxes packed to the front, ``hard_nums`` [B], and
  ``hard_texts`` [H, K, Ls] — or flat [H·K, Ls], the reference's layout, which costs one host sync — for the
  H = Σ hard_nums boxes in image order, each the positive then K-1 negatives; ``hard_text_mask`` [H, K] marks
  the real candidates when boxes have fewer negatives.

Which losses run is a setting of the step (:class:`Stage2Losses`), not part of the batch; how much each weighs is
:class:`LossWeights`. :meth:`ParsedBatch.parse` checks the batch once for every family's ``compute_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Stage2Inputs(Protocol):
    """What ``compute_loss`` reads from a batch (attributes; ``None`` where a part is absent)."""

    pixel_values: torch.Tensor
    pixel_attention_mask: torch.Tensor | None
    spatial_shapes: torch.Tensor | None
    text_short: torch.Tensor
    text_long: torch.Tensor | None
    box_infos: torch.Tensor | None
    box_texts: torch.Tensor | None
    box_nums: torch.Tensor | None
    hard_infos: torch.Tensor | None
    hard_texts: torch.Tensor | None
    hard_nums: torch.Tensor | None
    hard_text_mask: torch.Tensor | None


@dataclass(frozen=True)
class Stage2Losses:
    """Which local losses a step computes: region alignment (``regions``) and hard negatives (``hard``)."""

    regions: bool = True
    hard: bool = True

    @classmethod
    def of(cls, batch: Stage2Inputs) -> Stage2Losses:
        """The local losses the batch has the tensors for."""
        return cls(regions=batch.box_infos is not None, hard=batch.hard_texts is not None)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the stage-2 loss terms: ``loss = long + short + region·L_region [+ tic·L_tic] + hard·L_hard``.

    FG-CLIP 2's hard-negative term is itself ``hard_itc·itc + hard_pair·pair + hard_rank·rank``, with the rank
    margin τ clamped to [0, ``margin_max``]; FG-CLIP v1 reads ``region`` and ``hard`` only. The defaults are the
    reference recipes'; each model class names its own as ``default_loss_weights`` (FG-CLIP v1 weighs regions 0.1).
    """

    region: float = 0.2
    tic: float = 0.1
    hard: float = 0.5
    hard_itc: float = 0.6
    hard_pair: float = 3.0
    hard_rank: float = 0.4
    margin_max: float = 10.0


@dataclass
class ParsedBatch:
    """A validated stage-2 batch in the layout the losses index (parsed from :class:`Stage2Inputs`)."""

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
    def parse(cls, batch: Stage2Inputs, losses: Stage2Losses) -> ParsedBatch:
        """Parse a collated batch; the parts of losses that ``losses`` turns off are left out. Shapes are checked
        with errors naming the tensor; nothing syncs with the device except flat ``hard_texts``."""
        if batch.pixel_values is None or batch.text_short is None:
            raise ValueError("a stage-2 batch needs pixel_values and text_short")
        batch_size = batch.pixel_values.shape[0]
        text_short, text_long = batch.text_short, batch.text_long
        if text_short.ndim != 2 or text_short.shape[0] != batch_size:
            raise ValueError(f"text_short must be [{batch_size}, L], got {tuple(text_short.shape)}")
        if text_long is not None and (text_long.ndim != 2 or text_long.shape[0] != batch_size):
            raise ValueError(f"text_long must be [{batch_size}, L], got {tuple(text_long.shape)}")
        out = cls(batch_size, text_short, text_long)
        device = text_short.device
        if losses.regions:
            if batch.box_infos is None or batch.box_texts is None or batch.box_nums is None:
                raise ValueError("the region loss needs box_infos, box_texts and box_nums (or losses.regions=False)")
            out.boxes = _slots(batch.box_infos, batch_size, "box_infos")
            out.box_texts = batch.box_texts.reshape(-1, batch.box_texts.shape[-1])
            if out.box_texts.shape[0] != out.boxes.shape[0] * out.boxes.shape[1]:
                raise ValueError(
                    f"box_texts has {out.box_texts.shape[0]} rows for {batch_size} x {out.boxes.shape[1]} box slots"
                )
            out.box_valid = first_slots(out.boxes.shape[1], batch.box_nums, batch_size, device)
        hard_texts = batch.hard_texts
        if losses.hard and hard_texts is not None and hard_texts.numel():
            if batch.hard_infos is None or batch.hard_nums is None:
                raise ValueError("hard_texts were given without hard_infos and hard_nums")
            out.num_hard, out.candidates, out.hard_texts = _hard_layout(hard_texts, batch.hard_nums)
            out.hard_boxes = _slots(batch.hard_infos, batch_size, "hard_infos")
            valid = first_slots(out.hard_boxes.shape[1], batch.hard_nums, batch_size, device)
            # indices of the valid slots in image-major order, with a static count (no nonzero() sync)
            out.hard_order = torch.sort(valid.int(), descending=True, stable=True).indices[: out.num_hard]
            if batch.hard_text_mask is not None:
                out.hard_mask = batch.hard_text_mask.reshape(out.num_hard, out.candidates).bool()
        return out


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
