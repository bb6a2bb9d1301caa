"""FG-CLIP 2 image processor: SigLIP 2 NaFlex patchification with the reference's dynamic patch budget."""

from __future__ import annotations

from PIL import Image
from transformers import BatchFeature
from transformers.image_utils import get_image_size, make_flat_list_of_images, to_numpy_array
from transformers.models.siglip2.image_processing_pil_siglip2 import (
    Siglip2ImageProcessorKwargs,
    Siglip2ImageProcessorPil,
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
    """

    dynamic_max_patches: bool


class FGCLIP2ImageProcessor(Siglip2ImageProcessorPil):
    """NaFlex processor of FG-CLIP 2 (``Fgclip2ImageProcessor`` in the reference).

    Identical math to transformers' ``Siglip2ImageProcessorPil`` (binary search of the largest scale whose
    patch grid fits the budget, PIL bilinear resize, rescale to [−1, 1], row-major patches flattened as
    (row-in-patch, column-in-patch, channel), zero padding, mask, spatial shapes), plus the reference's dynamic
    budget: with ``dynamic_max_patches=True`` (the default) the budget comes from the **original** image sizes
    and an explicit ``max_num_patches`` is ignored, exactly as the reference; pass
    ``dynamic_max_patches=False`` to honour ``max_num_patches`` (the ImageNet evaluations and training do).
    """

    valid_kwargs = FGCLIP2ImageProcessorKwargs
    dynamic_max_patches = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def preprocess(self, images, **kwargs) -> BatchFeature:
        dynamic = kwargs.pop("dynamic_max_patches", self.dynamic_max_patches)
        if dynamic:
            flat = make_flat_list_of_images(images)
            patch = kwargs.get("patch_size", self.patch_size)
            kwargs["max_num_patches"] = max(patch_bucket(*original_size(im), patch_size=patch) for im in flat)
        return super().preprocess(images, **kwargs)


class Fgclip2ImageProcessor(FGCLIP2ImageProcessor):
    """The reference's class name, so ``preprocessor_config.json`` files that name it load through
    ``AutoImageProcessor`` without remote code."""
