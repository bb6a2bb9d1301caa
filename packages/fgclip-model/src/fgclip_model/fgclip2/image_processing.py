"""FG-CLIP 2 image processor: SigLIP 2 NaFlex patchification with the reference's dynamic patch budget."""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers import BatchFeature
from transformers.image_utils import SizeDict, get_image_size, make_flat_list_of_images, to_numpy_array
from transformers.models.siglip2.image_processing_pil_siglip2 import (
    Siglip2ImageProcessorKwargs,
    Siglip2ImageProcessorPil,
    convert_image_to_patches,
    get_image_size_for_max_num_patches,
)

# (more than this many patches in the original image -> this budget), checked in order; else the smallest
PATCH_BUCKETS = ((784, 1024), (576, 784), (256, 576), (128, 256))
SMALLEST_BUCKET = 128


def patch_bucket(height: int, width: int, patch_size: int = 16) -> int:
    """The reference's patch budget for an image of this original size: 128 / 256 / 576 / 784 / 1024."""
    patches = (width // patch_size) * (height // patch_size)
    for threshold, bucket in PATCH_BUCKETS:
        if patches > threshold:
            return bucket
    return SMALLEST_BUCKET


def original_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image or an HWC / CHW array or tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return get_image_size(to_numpy_array(image))


class FGCLIP2ImageProcessorKwargs(Siglip2ImageProcessorKwargs, total=False):
    r"""
    dynamic_max_patches (`bool`, *optional*, defaults to `self.dynamic_max_patches`):
        Pick the patch budget from the original image sizes (128/256/576/784/1024, the largest over the call)
        instead of ``max_num_patches``.
    per_image_budget (`bool`, *optional*, defaults to `False`):
        With the dynamic budget, give every image the budget of its own original size (as the reference's
        evaluation, which processes one image per call) instead of the largest in the call; the batch is padded
        to its longest patch sequence.
    """

    dynamic_max_patches: bool
    per_image_budget: bool


class FGCLIP2ImageProcessor(Siglip2ImageProcessorPil):
    """NaFlex processor of FG-CLIP 2 (``Fgclip2ImageProcessor`` in the reference).

    Identical math to transformers' ``Siglip2ImageProcessorPil`` (binary search of the largest scale whose
    patch grid fits the budget, PIL bilinear resize, rescale to [−1, 1], row-major patches flattened as
    (row-in-patch, column-in-patch, channel), zero padding, mask, spatial shapes), plus the reference's dynamic
    budget: with ``dynamic_max_patches=True`` (the default) the budget comes from the **original** image sizes
    and an explicit ``max_num_patches`` is ignored, exactly as the reference; pass
    ``dynamic_max_patches=False`` to honour ``max_num_patches`` (the ImageNet evaluations and training do).
    ``per_image_budget=True`` gives each image of a batch its own dynamic budget, so a batch encodes every image
    at the resolution a one-image call would (the benchmarks' protocol).
    """

    valid_kwargs = FGCLIP2ImageProcessorKwargs
    dynamic_max_patches = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def preprocess(self, images, **kwargs) -> BatchFeature:
        dynamic = kwargs.pop("dynamic_max_patches", self.dynamic_max_patches)
        per_image = kwargs.pop("per_image_budget", False)
        if not dynamic:
            return super().preprocess(images, **kwargs)
        flat = make_flat_list_of_images(images)
        patch = kwargs.get("patch_size", self.patch_size)
        budgets = [patch_bucket(*original_size(im), patch_size=patch) for im in flat]
        if not per_image or len(set(budgets)) <= 1:
            return super().preprocess(images, **{**kwargs, "max_num_patches": max(budgets)})
        return_tensors = kwargs.pop("return_tensors", None)
        singles = [
            super(FGCLIP2ImageProcessor, self).preprocess([im], **{**kwargs, "max_num_patches": b}, return_tensors="np")
            for im, b in zip(flat, budgets, strict=True)
        ]
        return _pad_to_longest(singles, return_tensors)

    def _preprocess(self, images: list[np.ndarray], **kwargs) -> BatchFeature:
        """transformers' SigLIP 2 steps with the same arithmetic (PIL resize; ``x * rescale_factor`` in float64,
        then float32; ``(x - mean) / std`` in float32), each image written straight into one zero-padded batch
        array instead of padded and stacked afterwards: the same output, in about half the time."""
        if kwargs.get("return_tensors") is None or not images:
            return super()._preprocess(images, **kwargs)
        patch, budget = kwargs["patch_size"], kwargs["max_num_patches"]
        channels = images[0].shape[0]
        values = np.zeros((len(images), budget, patch * patch * channels), np.float32)
        mask = np.zeros((len(images), budget), np.int32)
        shapes = []
        mean = std = None
        if kwargs["do_normalize"]:
            mean, std = (np.broadcast_to(np.asarray(v, np.float32), (channels,))[:, None, None]
                         for v in (kwargs["image_mean"], kwargs["image_std"]))  # fmt: skip
        tables: np.ndarray | None = None  # per-channel uint8 -> float32 tables, built on the first uint8 image
        for i, image in enumerate(images):
            if kwargs["do_resize"]:
                height, width = get_image_size_for_max_num_patches(image.shape[-2], image.shape[-1], patch, budget)
                image = self.resize(image=image, size=SizeDict(height=height, width=width), resample=kwargs["resample"])
            if image.dtype == np.uint8 and kwargs["do_rescale"]:  # patchify the bytes, then look the values up
                if tables is None:
                    tables = _value_tables(channels, kwargs["rescale_factor"], mean, std)
                patches = _patches_through_tables(convert_image_to_patches(image, patch)[:budget], tables)
            else:
                if kwargs["do_rescale"]:
                    image = (image.astype(np.float64) * kwargs["rescale_factor"]).astype(np.float32)
                if mean is not None:
                    image = image.astype(np.float32) if not np.issubdtype(image.dtype, np.floating) else image
                    image = (image - mean.astype(image.dtype)) / std.astype(image.dtype)
                patches = convert_image_to_patches(image, patch)[:budget]
            values[i, : len(patches)] = patches
            mask[i, : len(patches)] = 1
            shapes.append((image.shape[-2] // patch, image.shape[-1] // patch))
        data = {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": np.array(shapes)}
        return BatchFeature(data, tensor_type=kwargs["return_tensors"])


def _value_tables(channels: int, rescale_factor: float, mean, std) -> np.ndarray:
    """[channels, 256] float32: what the rescale and normalise steps make of each uint8 value in each channel,
    computed with exactly their arithmetic (``v * rescale_factor`` in float64, then float32; ``(x - mean) / std``
    in float32), so looking a value up gives the same bits as computing it."""
    values = (np.arange(256, dtype=np.float64) * rescale_factor).astype(np.float32)
    tables = np.broadcast_to(values, (channels, 256)).copy()
    if mean is not None:
        tables = (tables - mean[:, :, 0]) / std[:, :, 0]
    return tables


def _patches_through_tables(patches: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """uint8 patches [N, p·p·C] (channel last within a patch row) -> float32 through the per-channel tables: one
    gather per element instead of a float64 pass, a float32 pass and the normalisation."""
    channels = tables.shape[0]
    index = patches.astype(np.intp) + (np.arange(patches.shape[-1]) % channels * 256)
    return tables.reshape(-1)[index]


def _pad_to_longest(singles: list[BatchFeature], return_tensors) -> BatchFeature:
    """One batch from one-image outputs of different budgets: real patches kept, zero padding to the longest."""
    lengths = [int(s["pixel_attention_mask"][0].sum()) for s in singles]
    width = max(lengths)
    values = np.zeros((len(singles), width, singles[0]["pixel_values"].shape[-1]), singles[0]["pixel_values"].dtype)
    mask = np.zeros((len(singles), width), singles[0]["pixel_attention_mask"].dtype)
    for i, (single, n) in enumerate(zip(singles, lengths, strict=True)):
        values[i, :n] = single["pixel_values"][0, :n]
        mask[i, :n] = 1
    shapes = np.concatenate([s["spatial_shapes"] for s in singles])
    return BatchFeature(
        {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": shapes}, tensor_type=return_tensors
    )


class Fgclip2ImageProcessor(FGCLIP2ImageProcessor):
    """The reference's class name, so ``preprocessor_config.json`` files that name it load through
    ``AutoImageProcessor`` without remote code."""
