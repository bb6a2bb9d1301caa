"""The stage-2 training batch: what every collator emits and every model's ``compute_loss`` reads.

For a batch of B images (every family names its pixels ``pixel_values``):

* pixels: ``pixel_values`` — [B, 3, S, S] squares (FG-CLIP, CLIP), or NaFlex patch rows [B, N, C·p·p] with
  ``pixel_attention_mask`` [B, N] and ``spatial_shapes`` [B, 2] (FG-CLIP 2);
* ``text_short`` [B, Ls] — the short captions; ``text_long`` [B, Ll] — the long captions;
* region alignment: ``box_infos`` [B, S_b, 4] normalised xyxy box slots, zero padded, ``box_nums`` [B] the real
  slots per image (the first ``box_nums[b]``), ``box_texts`` [B·S_b, Ls] their captions;
* hard negatives: ``hard_infos`` [B, S_h, 4] with the flagged boxes packed to the front, ``hard_nums`` [B], and
  ``hard_texts`` [H, K, Ls] for the H = Σ hard_nums boxes in image order, each the positive then K-1 negatives
  (the reference's flat [H·K, Ls] layout is read too), ``hard_text_mask`` [H, K] marking the real candidates;
* bookkeeping the models never read: ``skipped`` (reason -> count of samples the collator dropped) and
  ``chinese`` [B].

A batch whose samples were all dropped has no tensors (:attr:`Stage2Batch.empty`). Which losses run is a loss
setting of the training run, not part of the batch. This package never imports fgclip-model: models read the batch
by its attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

PIXEL_FIELDS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
# read on the host by the models (position resizing, feature-map geometry): moving it would force a device sync
HOST_FIELDS = frozenset({"spatial_shapes"})


@dataclass
class Stage2Batch:
    """One collated stage-2 batch (see the module docstring for the layout)."""

    pixel_values: torch.Tensor | None = None
    pixel_attention_mask: torch.Tensor | None = None
    spatial_shapes: torch.Tensor | None = None
    text_short: torch.Tensor | None = None
    text_long: torch.Tensor | None = None
    box_infos: torch.Tensor | None = None
    box_texts: torch.Tensor | None = None
    box_nums: torch.Tensor | None = None
    hard_infos: torch.Tensor | None = None
    hard_texts: torch.Tensor | None = None
    hard_nums: torch.Tensor | None = None
    hard_text_mask: torch.Tensor | None = None
    chinese: torch.Tensor | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Every sample of the batch was dropped (nothing to train on)."""
        return self.pixel_values is None

    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The pixel tensors the batch has, as keywords of the models' image feature API."""
        return {name: getattr(self, name) for name in PIXEL_FIELDS if getattr(self, name) is not None}

    def pin_memory(self) -> Stage2Batch:
        """A copy with every tensor in pinned memory (what ``DataLoader(pin_memory=True)`` calls)."""
        return replace(self, **{name: t.pin_memory() for name, t in self._tensors() if name not in HOST_FIELDS})

    def _tensors(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self) if torch.is_tensor(getattr(self, f.name))]

    def to(self, device: torch.device | str) -> Stage2Batch:
        """A copy with every tensor on ``device`` (asynchronously; :data:`HOST_FIELDS` stay where they are)."""
        moved = {name: t.to(device, non_blocking=True) for name, t in self._tensors() if name not in HOST_FIELDS}
        return replace(self, **moved)
