"""Validation metrics on FineHARD-format records (FG-Shapes by default), for both model families.

* image↔text R@1 with short captions and with long captions (each image has one of each);
* hard-negative accuracy: the region feature of a box ranks its true short expression above its negatives;
* box classification (FG-Shapes only): the region feature picks the right "colour shape" among all of them.

Everything is computed batched from the models' feature API; the metrics are vectorised.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from fgclip_data.finehard.samples import Sample, SampleOptions, build_sample
from fgclip_data.report import Report


def recall_at_1(similarity: torch.Tensor) -> tuple[float, float]:
    """(image→text, text→image) R@1 of a square similarity matrix whose diagonal holds the pairs."""
    target = torch.arange(similarity.shape[0], device=similarity.device)
    i2t = (similarity.argmax(dim=1) == target).float().mean().item()
    t2i = (similarity.argmax(dim=0) == target).float().mean().item()
    return i2t, t2i


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


class Validator:
    """Computes the metrics of a model on fixed validation samples."""

    def __init__(
        self,
        family: str,
        records,
        images,
        tokenizer,
        collator,
        resize,
        vocabulary: dict | None,
        negatives: int | None = 10,
        batch_size: int = 64,
    ) -> None:
        self.family, self.collator, self.tokenizer = family, collator, tokenizer
        self.samples = validation_samples(records, images, resize, negatives)
        self.batch_size = batch_size
        self.classes = None
        if vocabulary:
            self.classes = [f"{c} {s}" for c in vocabulary["colors"] for s in vocabulary["shapes"]]

    def _texts(self, model, texts: list[str], walk: str, length: int, device) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), 512):
            ids = self.collator.tokenize(texts[start : start + 512], length).to(device)
            out.append(F.normalize(model.get_text_features(ids, walk_type=walk).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1, device=device)

    def _images(self, model, batch: dict, device):
        """(global image features, one region-feature tensor per image) of a collated batch."""
        boxes = [torch.tensor(s.boxes).reshape(-1, 4) for s in batch["_samples"]]
        if self.family == "fgclip":
            pixels = batch["image"].to(device)
            image = model.get_image_features(pixels)
            regions = model.get_image_region_features(pixels, boxes)
        else:
            inputs = [batch[k].to(device) for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")]
            image = model.get_image_features(*inputs)
            sizes = [(1, 1)] * len(boxes)  # boxes are normalised: pixels of a 1x1 image
            regions = model.get_image_region_features(*inputs, image_sizes=sizes, region_infos=boxes)
        return F.normalize(image.float(), dim=-1), [F.normalize(r.float(), dim=-1) for r in regions]

    @torch.no_grad()
    def __call__(self, model, device=None) -> dict[str, float]:
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        images, regions = [], []
        for start in range(0, len(self.samples), self.batch_size):
            chunk = self.samples[start : start + self.batch_size]
            batch = self.collator.images([s.image for s in chunk])
            batch["_samples"] = chunk
            image, region = self._images(model, batch, device)
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
            metrics["hard_negative_acc"] = (scores.argmax(dim=1) == 0).float().mean().item()
        if self.classes and hard:
            prompts = self._texts(model, [f"a {name}" for name in self.classes], "box", c.short_length, device)
            names = [" ".join(self.samples[i].box_captions[k].split()[2:4]) for i, k in hard]
            truth = torch.tensor([self.classes.index(n) if n in self.classes else -1 for n in names], device=device)
            predicted = (region @ prompts.T).argmax(dim=1)
            metrics["box_cls_acc"] = (predicted == truth).float().mean().item()
        model.train(was_training)
        return metrics
