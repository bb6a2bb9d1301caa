"""Dense-feature similarity maps (the FG-CLIP READMEs' heatmap figure).

:func:`similarity_map` is plain torch; :func:`plot_similarity_map` needs matplotlib
(``pip install "fgclip-model[viz]"``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from PIL import Image


def similarity_map(dense: torch.Tensor, text_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Cosine similarity of every patch of one image with a text: dense [N, D] (N ≥ h·w, padding rows after
    the grid are ignored), text_embed [D] -> [h, w]."""
    h, w = grid_hw
    if dense.ndim != 2 or dense.shape[0] < h * w:
        raise ValueError(f"dense features must be [N ≥ {h * w}, D] for a {h}x{w} grid, got {tuple(dense.shape)}")
    patches = F.normalize(dense[: h * w].float(), dim=-1)
    return (patches @ F.normalize(text_embed.float(), dim=-1)).reshape(h, w)


@torch.no_grad()
def dense_similarity(
    model,
    processor,
    image: Image.Image,
    text: str | list[str],
    walk_type: str | None = None,
    max_num_patches: int | None = None,
) -> torch.Tensor:
    """Similarity map [h, w] of ``image`` with ``text`` ([n, h, w] for a list of captions) for an FG-CLIP (v1) or
    FG-CLIP 2 model and its processor.

    The text walk defaults to the one the family's dense features live in: ``"short"`` for v1, ``"box"`` for
    FG-CLIP 2. ``max_num_patches`` (FG-CLIP 2) sets the patch budget explicitly — e.g. 16384 for a 2K image, as
    the FG-CLIP 2 README's demo — instead of the image's dynamic bucket (at most 1024).
    """
    from fgclip_model.auto import family_of

    family = family_of(model)
    naflex = family.naflex
    if max_num_patches is not None and not naflex:
        raise ValueError("max_num_patches applies to FG-CLIP 2 (NaFlex) models only")
    budget = {} if max_num_patches is None else {"max_num_patches": max_num_patches, "dynamic_max_patches": False}
    inputs = processor(images=[image], **budget)
    walk = walk_type or family.dense_walk
    if naflex:
        shapes = inputs["spatial_shapes"]
        dense = model.get_image_dense_features(inputs["pixel_values"], inputs["pixel_attention_mask"], shapes)[0]
        grid = tuple(shapes[0].tolist())
    else:
        dense = model.get_image_dense_features(inputs["pixel_values"])[0]
        side = inputs["pixel_values"].shape[-1] // model.config.vision_config.patch_size
        grid = (inputs["pixel_values"].shape[-2] // model.config.vision_config.patch_size, side)
    texts = [text] if isinstance(text, str) else list(text)
    tokens = processor(text=texts, walk_type=walk)
    text_embeds = model.get_text_features(tokens["input_ids"], tokens.get("attention_mask"), walk_type=walk)
    maps = torch.stack([similarity_map(dense, t, grid) for t in text_embeds])
    return maps[0] if isinstance(text, str) else maps


def plot_similarity_map(
    image: Image.Image,
    sim: torch.Tensor,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
):
    """The image with the similarity map stretched over it (and beside it); saved as PNG when ``path`` is given.

    Returns the matplotlib figure.
    """
    plt = _pyplot()
    values = sim.detach().float().cpu().numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.5))
    extent = (0, image.width, image.height, 0)
    left.imshow(image.convert("RGB"))
    left.imshow(values, cmap=cmap, alpha=alpha, extent=extent, interpolation="bilinear")
    left.set_title(title or "similarity")
    heat = right.imshow(values, cmap=cmap, interpolation="nearest")
    right.set_title("patch cosine similarity")
    fig.colorbar(heat, ax=right, fraction=0.046)
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_similarity_maps(
    image: Image.Image,
    sims: torch.Tensor,
    captions: list[str],
    path: str | os.PathLike | None = None,
    columns: int = 3,
    alpha: float = 0.5,
    cmap: str = "jet",
):
    """A grid: the image, then one overlay per caption (``sims`` [n, h, w] from :func:`dense_similarity` with a list
    of captions), on one colour scale; saved as PNG when ``path`` is given. Returns the matplotlib figure."""
    plt = _pyplot()
    if sims.ndim != 3 or len(sims) != len(captions):
        raise ValueError(f"expected one [h, w] map per caption, got {tuple(sims.shape)} for {len(captions)} captions")
    values = sims.detach().float().cpu().numpy()
    panels = len(captions) + 1
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    extent = (0, image.width, image.height, 0)
    vmin, vmax = float(values.min()), float(values.max())
    axes[0][0].imshow(image.convert("RGB"))
    axes[0][0].set_title("image")
    for k, (caption, sim) in enumerate(zip(captions, values, strict=True), start=1):
        ax = axes[k // columns][k % columns]
        ax.imshow(image.convert("RGB"))
        heat = ax.imshow(sim, cmap=cmap, alpha=alpha, extent=extent, interpolation="bilinear", vmin=vmin, vmax=vmax)
        ax.set_title(caption if len(caption) <= 40 else caption[:37] + "...", fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.02)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError('the similarity plots need matplotlib: pip install "fgclip-model[viz]"') from err
    return plt
