"""One encoding interface over every model family, as the benchmarks need it.

An :class:`Encoder` turns images (paths or PIL), texts (with a walk: ``short``, ``box`` or ``long``) and boxes into
L2-normalised features, batched, with the family's own processor conventions (FG-CLIP: square squash and first-EOS
pooling; FG-CLIP 2 and SigLIP 2: NaFlex patches and text padded to the walk's length; CLIP / Long-CLIP: one text
table, no region features). Families are picked from the checkpoint's ``config.json`` through ``fgclip_model.load``.

Under ``torchrun`` every call encodes this rank's contiguous slice and gathers all rows back in order, so each
rank holds the same feature matrices as a single process would.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

import fgclip_model

from .distributed import gather_rows, shard
from .images import ImageItem, View, batches, default_workers, open_rgb
from .protocols import Protocol, protocol_of, sigmoid_scores


@dataclass
class EncoderStats:
    """Where an encoder's time went: images (wall time of the image passes, of which waiting for decoded
    batches) and texts (encoded, and served from the cache)."""

    images: int = 0
    image_seconds: float = 0.0
    decode_wait_seconds: float = 0.0
    texts: int = 0
    text_seconds: float = 0.0
    cached_texts: int = 0

    def summary(self) -> dict:
        out = {"images": self.images, "texts": self.texts, "cached_texts": self.cached_texts}
        if self.images:
            out["images_per_second"] = round(self.images / self.image_seconds, 2)
            out["decode_wait_share"] = round(self.decode_wait_seconds / self.image_seconds, 4)
        if self.texts:
            out["texts_per_second"] = round(self.texts / self.text_seconds, 1)
        return out


@dataclass
class Encoder:
    """Features of a loaded model (``fgclip_model.load``); ``family`` is one of ``fgclip_model.FAMILIES``."""

    model: torch.nn.Module
    processor: object
    family: str
    device: torch.device | str = "cpu"
    batch_size: int = 32
    text_batch_size: int = 256
    max_num_patches: int | None = None  # NaFlex: a fixed patch budget (None: each image's dynamic bucket)
    workers: int = field(default_factory=default_workers)
    progress: bool = True
    text_attention_mask: bool | None = None  # None: as the family's reference scripts (FG-CLIP 2: with the mask)
    stats: EncoderStats = field(default_factory=lambda: EncoderStats(), init=False)
    _text_cache: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(
        cls,
        path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        backend: str = "eager",
        **kwargs,
    ) -> Encoder:
        """Load any supported checkpoint (folder, original ``.pt``, hub id); ``dtype`` defaults to bf16 on CUDA and
        fp32 elsewhere; ``backend``: how features are computed (``fgclip_model.backends``)."""
        from fgclip_model.backends import with_backend

        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        path = fgclip_model.resolve(path)
        model, processor = fgclip_model.load(path, dtype=dtype)
        if processor.tokenizer is None:
            raise ValueError(f"{path} holds no tokenizer files: a benchmark needs one to encode its texts")
        model = with_backend(model.to(device), backend)
        return cls(model, processor, fgclip_model.detect_family(path), torch.device(device), **kwargs)

    @property
    def capabilities(self) -> fgclip_model.ModelFamily:
        """The family's descriptor: what its models can do (regions, NaFlex images, text walks)."""
        return fgclip_model.get_model_family(self.family)

    @property
    def protocol(self) -> Protocol:
        """The family's reference evaluation conventions (score transform, RoI normalisation, text mask)."""
        return protocol_of(self.capabilities)

    def scores(self, cosine: torch.Tensor) -> torch.Tensor:
        """What the family's reference scripts rank for retrieval and classification: the cosine similarities, or
        FG-CLIP 2's ``sigmoid(exp(t)·cos + b)``."""
        return sigmoid_scores(self.model, cosine) if self.protocol.sigmoid_scores else cosine

    @contextmanager
    def fixed_patches(self, budget: int):
        """NaFlex families: encode with a fixed patch budget inside the block (unless ``--max-num-patches`` set
        one), as the reference's ImageNet evaluation (1024) and square segmentation windows need."""
        saved = self.max_num_patches
        if self.capabilities.naflex and saved is None:
            self.max_num_patches = budget
        try:
            yield self
        finally:
            self.max_num_patches = saved

    @property
    def has_regions(self) -> bool:
        return self.capabilities.regions

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------------------------------------- inputs

    def _image_inputs(self, images: list) -> dict[str, torch.Tensor]:
        kwargs = {}
        if self.capabilities.naflex:
            # a fixed budget, or each image its own dynamic budget (as the reference, which encodes one per call)
            fixed = {"max_num_patches": self.max_num_patches, "dynamic_max_patches": False}
            kwargs = fixed if self.max_num_patches else {"per_image_budget": True}
        return dict(self.processor(images=images, **kwargs))

    def _prepare(self, items: list) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
        """Worker side: decode and preprocess one batch; also return each image's (height, width)."""
        images = [open_rgb(item) for item in items]
        return self._image_inputs(images), [(im.height, im.width) for im in images]

    def _to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device) for k, v in inputs.items()}
        out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    def _image_batches(self, items: list, desc: str):
        """Prepared batches of ``items``; the time spent waiting for them (decoding not hidden behind encoding)
        and the time the caller spends encoding each are added to :attr:`stats`."""
        desc = f"{desc} ({len(items)})" if self.progress else None
        loader = iter(batches(items, self.batch_size, self._prepare, self.workers, desc))
        while True:
            start = time.perf_counter()
            try:
                inputs, sizes = next(loader)
            except StopIteration:
                return
            ready = time.perf_counter()
            self.stats.decode_wait_seconds += ready - start
            yield self._to_device(inputs), sizes
            self.stats.images += len(sizes)
            self.stats.image_seconds += time.perf_counter() - start

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return getattr(out, "pooler_output", out)  # transformers' CLIPModel / Siglip2Model return a model output

    # ----------------------------------------------------------------------------------------------- features

    @torch.no_grad()
    def images(self, items: list[ImageItem]) -> torch.Tensor:
        """[N, D] normalised global image features."""
        part = shard(len(items))
        out = [torch.zeros(0, 0)]
        for inputs, _ in self._image_batches(View(items, part), "images"):
            features = self.model.get_image_features(**inputs)
            out.append(F.normalize(self._tensor(features).float(), dim=-1).cpu())
        return gather_rows(torch.cat(out[1:]) if len(out) > 1 else torch.zeros(0, self.embed_dim))

    @torch.no_grad()
    def texts(self, texts: list[str], walk: str = "short", lowercase: bool = True) -> torch.Tensor:
        """[N, D] normalised text features; ``walk`` picks the family's text path (``short``, ``box``, ``long``).

        Texts are encoded shortest first (families that pad to the longest text of a batch then pad little) and
        returned in the given order; a list encoded before with the same walk (class prompts shared by several
        tasks) comes from the encoder's cache."""
        key = (walk, lowercase, self.text_attention_mask, tuple(texts))  # the mask setting changes the features
        if key in self._text_cache:
            self.stats.cached_texts += len(texts)
            return self._text_cache[key]
        start = time.perf_counter()
        part = shard(len(texts))
        local = [texts[i] for i in part]
        order = sorted(range(len(local)), key=lambda i: len(local[i]))
        ordered = [local[i] for i in order]
        starts = range(0, len(ordered), self.text_batch_size)
        if self.progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"texts ({len(local)})", leave=False, unit="batch")
        out = [self._text_features(ordered[s : s + self.text_batch_size], walk, lowercase) for s in starts]
        features = torch.cat(out) if out else torch.zeros(0, self.embed_dim)
        features = features[torch.argsort(torch.tensor(order, dtype=torch.long))] if order else features
        result = gather_rows(features)
        self._text_cache[key] = result
        self.stats.texts += len(texts)
        self.stats.text_seconds += time.perf_counter() - start
        return result

    def _text_features(self, texts: list[str], walk: str, lowercase: bool = True) -> torch.Tensor:
        tokens = self.processor(text=texts, walk_type=walk, lowercase=lowercase)
        ids = tokens["input_ids"].to(self.device)
        use_mask = self.protocol.text_attention_mask if self.text_attention_mask is None else self.text_attention_mask
        mask = tokens.get("attention_mask") if use_mask else None
        mask = None if mask is None else mask.to(self.device)
        walk_type = {"walk_type": walk} if self.capabilities.walks else {}
        features = self._tensor(self.model.get_text_features(input_ids=ids, attention_mask=mask, **walk_type))
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.no_grad()
    def regions(
        self, items: list[ImageItem], boxes: list[torch.Tensor], pixels: bool = False, normalize: bool = True
    ) -> list[torch.Tensor]:
        """Region features, one [n_i, D] tensor per image, for xyxy boxes given normalised to [0, 1] or, with
        ``pixels``, in pixels of the original image; L2-normalised unless ``normalize=False`` (FG-CLIP v1's box
        scripts score the raw RoI features). Each image is encoded once for all its boxes."""
        if not self.has_regions:
            raise ValueError(f"the {self.family} family has no region features")
        if len(items) != len(boxes):
            raise ValueError(f"got {len(boxes)} box lists for {len(items)} images")
        part = shard(len(items))
        local_boxes = [torch.as_tensor(boxes[i], dtype=torch.float32).reshape(-1, 4) for i in part]
        out: list[torch.Tensor] = []
        done = 0
        for inputs, sizes in self._image_batches(View(items, part), "regions"):
            chunk = local_boxes[done : done + len(sizes)]
            if pixels:
                chunk = [
                    b / torch.tensor([w, h, w, h], dtype=torch.float32) for b, (h, w) in zip(chunk, sizes, strict=True)
                ]
            done += len(sizes)
            features = self.model.get_image_region_features(**inputs, boxes=[b.clamp(0, 1) for b in chunk])
            out.extend((F.normalize(f.float(), dim=-1) if normalize else f.float()).cpu() for f in features)
        counts = torch.tensor([len(b) for b in boxes])
        flat = gather_rows(torch.cat(out) if out else torch.zeros(0, self.embed_dim))
        return list(flat.split(counts.tolist()))

    @torch.no_grad()
    def dense(self, images: list) -> list[torch.Tensor]:
        """Normalised per-patch features, one [h, w, D] map per PIL image (of this process: no sharding)."""
        if not self.has_regions:
            raise ValueError(f"the {self.family} family has no dense features")
        inputs = self._to_device(self._image_inputs(images))
        dense = self.model.get_image_dense_features(**inputs)
        if self.capabilities.naflex:  # each image's own grid
            grids = inputs["spatial_shapes"].tolist()
        else:
            side = round(dense.shape[1] ** 0.5)
            grids = [(side, side)] * len(images)
        return [
            F.normalize(d[: h * w].float(), dim=-1).reshape(h, w, -1) for d, (h, w) in zip(dense, grids, strict=True)
        ]

    @cached_property
    def embed_dim(self) -> int:
        """Width of the shared embedding space (for the empty feature matrix of a rank with nothing to encode)."""
        with torch.no_grad():
            return self._text_features(["a"], "short").shape[1]
