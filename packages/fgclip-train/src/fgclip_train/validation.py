"""Validation metrics on FineHARD-format records (FG-Shapes by default), for both model families.

* image↔text R@1 with short captions and with long captions (each image has one of each);
* hard-negative accuracy: the region feature of a box ranks its true short expression at least as high as
  its negatives;
* FG-Shapes only: the share of hard negatives changing each attribute that the true caption beats
  (``hard_win_color`` / ``_shape`` / ``_size`` / ``_position``);
* box classification: the region feature picks its box's class among all of the set's. FG-Shapes: the 40 "colour
  shape" classes (prompts "a red circle"); other data (e.g. an import of a COCO-style set, whose short region
  captions are the category names): the distinct short region captions of the validation split.

Everything is computed batched from the feature API every family shares (processor outputs in, normalised boxes,
one tensor per image out); the metric definitions are FG-Shapes' own (``fgclip_data.fgshapes.tasks``), the
same the benchmark's FG-Shapes tasks use.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from fgclip_data.collate import distinct_texts
from fgclip_data.fgshapes.tasks import (
    box_class,
    box_classification_accuracy,
    changed_attribute,
    class_prompts,
    classes,
    hard_negative_accuracy,
    hard_negative_win_rates,
    recall_at_1,
)
from fgclip_data.finehard.samples import Sample, SampleOptions, build_sample
from fgclip_data.report import Report

__all__ = ["Validator", "build_validator", "recall_at_1", "validation_samples"]


def build_validator(config, val_records, sources, tokenizer, collator, resize) -> Validator:
    """The FG-CLIP families' validator (the ``TrainingFamily.build_validator`` of fgclip and fgclip2)."""
    from .data import fgshapes_vocabulary

    return Validator(
        val_records,
        sources.images,
        tokenizer,
        collator,
        resize,
        fgshapes_vocabulary(sources),
        config.data.negatives,
    )


def validation_samples(records, images, resize, negatives: int | None) -> list[Sample]:
    """Samples of the validation records, built deterministically (short region captions, every box)."""
    from fgclip_data.finehard.paths import resolve_image_path
    from fgclip_data.finehard.samples import load_image

    report = Report()
    options = SampleOptions(region_caption="short", negatives=negatives, max_boxes=1 << 20)
    out = []
    for ref in records:
        image = load_image(resolve_image_path(ref.record.f_path, images), report, ref.file)
        if image is None:
            continue
        sample = build_sample(ref.record, resize(image), options, random.Random(0), report, ref.file)
        if isinstance(sample, Sample):
            out.append(sample)
    return out


PIXEL_CACHE_BYTES = 1 << 30  # validation pixels kept between validations up to this size (FG-Shapes: 0.8 GB)


def image_inputs(pixels: dict, device) -> dict[str, torch.Tensor]:
    """The model's image keywords from a collator's pixels (``collator.images``), on ``device``."""
    return {k: v.to(device) for k, v in pixels.items()}


class Validator:
    """Computes the metrics of a model on fixed validation samples."""

    def __init__(
        self,
        records,
        images,
        tokenizer,
        collator,
        resize,
        vocabulary: dict | None,
        negatives: int | None = 10,
        batch_size: int = 64,
    ) -> None:
        self.collator, self.tokenizer = collator, tokenizer
        self.samples = validation_samples(records, images, resize, negatives)
        self.batch_size = batch_size
        self.classes = classes(vocabulary) if vocabulary else None
        self._pixels: list | None = None  # (samples, collated pixels) per batch, after a first pass that fits

    def _texts(self, model, texts: list[str], walk: str, length: int, device) -> torch.Tensor:
        """Normalised features of ``texts``, each distinct text encoded once (hard-negative rewrites repeat)."""
        distinct, index = distinct_texts(texts)
        out = []
        for start in range(0, len(distinct), 512):
            ids = self.collator.tokenize(distinct[start : start + 512], length).to(device)
            out.append(F.normalize(model.get_text_features(ids, walk_type=walk).float(), dim=-1))
        if not out:
            return torch.zeros(0, 1, device=device)
        return torch.cat(out)[torch.tensor(index, device=device)]

    def _batches(self):
        """(samples, collated pixels) per validation batch; the pixels are prepared once and kept when all of them
        fit in ``PIXEL_CACHE_BYTES`` (the samples never change, and preprocessing is a third of a validation)."""
        if self._pixels is not None:
            yield from self._pixels
            return
        kept, size = [], 0
        for start in range(0, len(self.samples), self.batch_size):
            chunk = self.samples[start : start + self.batch_size]
            batch = self.collator.images([s.image for s in chunk])
            size += sum(v.numel() * v.element_size() for v in batch.values() if torch.is_tensor(v))
            if kept is not None and size <= PIXEL_CACHE_BYTES:
                kept.append((chunk, batch))
            else:
                kept = None
            yield chunk, batch
        self._pixels = kept

    def _images(self, model, chunk: list[Sample], batch: dict, device):
        """(global image features, one region-feature tensor per image) of a collated batch, one vision pass."""
        boxes = [torch.tensor(s.boxes).reshape(-1, 4) for s in chunk]
        image, regions = model.get_image_and_region_features(**image_inputs(batch, device), boxes=boxes)
        return F.normalize(image.float(), dim=-1), [F.normalize(r.float(), dim=-1) for r in regions]

    def _box_classes(self, boxes: list[tuple[int, int]]) -> tuple[list[str], torch.Tensor]:
        """(class prompts, the class of each (sample, box)): FG-Shapes' colour-shape classes, else the distinct
        short region captions of the validation samples (one class per caption)."""
        captions = [self.samples[i].box_captions[k] for i, k in boxes]
        if self.classes:
            return class_prompts(self.classes), torch.tensor([box_class(t, self.classes) for t in captions])
        names = sorted(set(captions))
        index = {name: n for n, name in enumerate(names)}
        return names, torch.tensor([index[t] for t in captions])

    @torch.no_grad()
    def __call__(self, model, device=None) -> dict[str, float]:
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        images, regions = [], []
        for chunk, batch in self._batches():
            image, region = self._images(model, chunk, batch, device)
            images.append(image)
            regions.extend(region)
        image = torch.cat(images)
        c = self.collator
        short = self._texts(model, [s.short_caption for s in self.samples], "short", c.short_length, device)
        long = self._texts(model, [s.caption for s in self.samples], "long", c.long_length, device)
        metrics = {}
        metrics["i2t_r1_short"], metrics["t2i_r1_short"] = recall_at_1(image @ short.T)
        metrics["i2t_r1_long"], metrics["t2i_r1_long"] = recall_at_1(image @ long.T)

        region = torch.cat(regions)
        hard = [(i, k) for i, s in enumerate(self.samples) for k in range(len(s.boxes))]
        groups = [texts for s in self.samples for texts in s.hard_texts]
        if groups and all(len(s.hard_texts) == len(s.boxes) for s in self.samples):
            k1 = len(groups[0])
            cands = self._texts(model, [t for g in groups for t in g], "box", c.short_length, device)
            scores = torch.einsum("hp,hkp->hk", region, cands.reshape(len(groups), k1, -1))
            metrics["hard_negative_acc"] = hard_negative_accuracy(scores)
            if self.classes:  # FG-Shapes: which attribute the rewrites that win change
                kinds = [[changed_attribute(g[0], t) for t in g[1:]] for g in groups]
                for kind, rate in hard_negative_win_rates(scores, kinds).items():
                    metrics[f"hard_win_{kind}"] = rate
        if hard:
            names, truth = self._box_classes(hard)
            prompts = self._texts(model, names, "box", c.short_length, device)
            metrics["box_cls_acc"] = box_classification_accuracy(region @ prompts.T, truth)
        model.train(was_training)
        return metrics
