"""Collators: samples -> a :class:`~fgclip_data.batch.Stage2Batch` (the reference collators' layout).

Tokenizers and image processors are passed in and used by duck typing (this package never imports
fgclip_model): ``tokenizer(texts, padding=..., truncation=True, max_length=..., return_tensors="pt")`` and
``image_processor(images, return_tensors="pt", **kwargs)``.

Layout (B images, S = ``max_boxes`` slots, H hard boxes in the batch, K1 = most candidates of a hard box):
``box_infos`` [B, S, 4] normalised xyxy (zeros in empty slots), ``box_texts`` [B·S, L], ``box_nums`` [B];
``hard_infos`` [B, S, 4] with the flagged boxes first, ``hard_nums`` [B], ``hard_texts`` [H, K1, L] (positive
first), ``hard_text_mask`` [H, K1]. Nothing assumes 4 boxes or 10 negatives. Dropped samples are counted in
``skipped`` (reason -> count).
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Sequence

import torch

from fgclip_data.batch import Stage2Batch
from fgclip_data.finehard.samples import Sample, Skipped
from fgclip_data.threads import batch_threads, chunks, thread_map

TEXT_CACHE_SIZE = 100_000  # texts whose fixed-length token rows a collator keeps (cleared when full)


def distinct_texts(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in first-seen order, and for every text the index of its distinct text."""
    distinct = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(distinct)}
    return distinct, [where[t] for t in texts]


class _Collator:
    short_length: int
    long_length: int
    padding: bool | str

    def __init__(
        self,
        tokenizer,
        image_processor,
        max_boxes: int = 4,
        add_box_loss: bool = True,
        use_hard_neg: bool = True,
        short_length: int | None = None,
        long_length: int | None = None,
    ) -> None:
        """``short_length`` / ``long_length``: token budgets (default: the family's 77/248 or 64/196);
        ``add_box_loss`` / ``use_hard_neg``: build the box / hard-negative tensors (which losses run is the loss
        settings' business, not the batch's)."""
        self.short_length = short_length or self.short_length
        self.long_length = long_length or self.long_length
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_boxes = max_boxes
        self.add_box_loss = add_box_loss
        self.use_hard_neg = use_hard_neg
        self._rows: dict[int, dict[str, torch.Tensor]] = {}  # token budget -> text -> its fixed-length row

    def tokenize(self, texts: list[str], length: int) -> torch.Tensor:
        """``input_ids`` of ``texts``, exactly the tokenizer's, with each distinct text tokenized once: a batch's
        region and hard-negative captions repeat (FG-Shapes: ~1 250 rows, ~630 distinct), and with fixed-length
        padding a row does not depend on its batch, so rows are also kept across batches (:data:`TEXT_CACHE_SIZE`
        texts at most) and a phrase seen before is not tokenized again."""
        if not texts:
            return torch.zeros(0, length if self.padding == "max_length" else 1, dtype=torch.long)
        if self.padding != "max_length":  # padded to the batch's longest text: the same set of texts, the same width
            distinct, index = distinct_texts(texts)
            return self._ids(distinct, length)[index]
        cache = self._rows.setdefault(length, {})
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            if len(cache) + len(missing) > TEXT_CACHE_SIZE:
                cache.clear()
            cache.update(zip(missing, self._ids(missing, length), strict=True))
        return torch.stack([cache[t] for t in texts])

    def _ids(self, texts: list[str], length: int) -> torch.Tensor:
        out = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=length, return_tensors="pt")
        return out["input_ids"]

    def images(self, images: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_images(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """The pixels of a training batch (:meth:`images`, unless a family varies them per batch)."""
        return self.images([s.image for s in samples])

    def __call__(self, items: Sequence[Sample | Skipped]) -> Stage2Batch:
        samples = [s for s in items if isinstance(s, Sample)]
        skipped = dict(Counter(s.reason for s in items if isinstance(s, Skipped)))
        if not samples:
            return Stage2Batch(skipped=skipped)
        parts: dict = self.training_images(samples)
        parts["text_short"] = self.tokenize([s.short_caption for s in samples], self.short_length)
        parts["text_long"] = self.tokenize([s.caption for s in samples], self.long_length)
        if self.add_box_loss:
            parts.update(self.boxes(samples))
        if self.use_hard_neg:
            parts.update(self.hard(samples))
        return Stage2Batch(**parts, chinese=torch.tensor([s.chinese for s in samples]), skipped=skipped)

    def boxes(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        b, slots = len(samples), self.max_boxes
        infos = torch.zeros(b, slots, 4)
        texts = [""] * (b * slots)
        nums = torch.zeros(b, dtype=torch.long)
        for i, s in enumerate(samples):
            n = min(len(s.boxes), slots)
            nums[i] = n
            if n:
                infos[i, :n] = torch.tensor(s.boxes[:n])
                texts[i * slots : i * slots + n] = s.box_captions[:n]
        return {"box_infos": infos, "box_texts": self.tokenize(texts, self.short_length), "box_nums": nums}

    def hard(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        b, slots = len(samples), self.max_boxes
        infos = torch.zeros(b, slots, 4)
        nums = torch.zeros(b, dtype=torch.long)
        groups: list[list[str]] = []
        for i, s in enumerate(samples):
            n = min(len(s.hard_boxes), slots)
            nums[i] = n
            if n:
                infos[i, :n] = torch.tensor(s.hard_boxes[:n])
                groups.extend(s.hard_texts[:n])
        width = max((len(g) for g in groups), default=1)
        mask = torch.zeros(len(groups), width, dtype=torch.bool)
        flat = []
        for g, texts in enumerate(groups):
            mask[g, : len(texts)] = True
            flat.extend(texts + [texts[0]] * (width - len(texts)))  # padding candidates are masked out
        ids = self.tokenize(flat, self.short_length)
        return {
            "hard_infos": infos,
            "hard_nums": nums,
            "hard_texts": ids.reshape(len(groups), width, ids.shape[-1]),
            "hard_text_mask": mask,
        }


class FGCLIPCollator(_Collator):
    """FG-CLIP v1 (and CLIP) batches: ``pixel_values`` [B, 3, S, S] (images already squashed by the dataset),
    ``text_short`` (≤ 77 tokens) and ``text_long`` (≤ 248) padded to the longest text (the model pools the first
    EOS)."""

    short_length, long_length = 77, 248
    padding = True

    def images(self, images: list) -> dict[str, torch.Tensor]:
        out = self.image_processor(images, do_resize=False, do_center_crop=False, return_tensors="pt")
        return {"pixel_values": out["pixel_values"]}


class FGCLIP2Collator(_Collator):
    """FG-CLIP 2 batches: NaFlex ``pixel_values`` / ``pixel_attention_mask`` / ``spatial_shapes``; texts padded
    to max length (64 / 196; the model pools the last position).

    ``max_num_patches``: a fixed patch budget, or ``None`` for the reference's batch bucket (the image
    processor's dynamic budget: the largest bucket of the batch's images).
    """

    short_length, long_length = 64, 196
    padding = "max_length"

    def __init__(
        self,
        tokenizer,
        image_processor,
        max_num_patches: int | None = None,
        min_num_patches: int | None = None,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(tokenizer, image_processor, **kwargs)
        if min_num_patches is not None and (max_num_patches is None or not 0 < min_num_patches <= max_num_patches):
            raise ValueError(
                f"min_num_patches {min_num_patches} needs a fixed max_num_patches at least as large "
                f"(got {max_num_patches})"
            )
        self.max_num_patches, self.min_num_patches, self.seed = max_num_patches, min_num_patches, seed

    def training_images(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """With ``min_num_patches``, each training batch gets its own patch budget, drawn uniformly from
        [``min_num_patches``, ``max_num_patches``] by a generator seeded with the batch's captions (the same batch
        always gets the same budget: resumed runs replay it): objects then cover varying numbers of patches, so
        a model cannot read an object's size from its extent in patches."""
        if self.min_num_patches is None:
            return super().training_images(samples)
        key = zlib.crc32("\n".join(s.caption for s in samples).encode()) ^ self.seed
        budget = random.Random(key).randint(self.min_num_patches, self.max_num_patches)
        return self.images([s.image for s in samples], budget)

    def images(self, images: list, budget: int | None = None) -> dict[str, torch.Tensor]:
        """Pixels at ``budget`` patches (default: ``max_num_patches``; validation and inference always use it)."""
        kwargs = {}
        budget = budget or self.max_num_patches
        if budget is not None:
            kwargs["max_num_patches"] = budget
            if getattr(self.image_processor, "dynamic_max_patches", None) is not None:
                kwargs["dynamic_max_patches"] = False
        keys = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
        parts = chunks(images, batch_threads()) if budget is not None else [images]  # a fixed budget: parts align

        def process(part: Sequence) -> dict[str, torch.Tensor]:
            out = self.image_processor(list(part), return_tensors="pt", **kwargs)
            return {k: out[k] for k in keys}

        if len(parts) == 1:
            return process(images)
        outs = thread_map(process, parts)
        return {k: torch.cat([o[k] for o in outs]) for k in keys}
