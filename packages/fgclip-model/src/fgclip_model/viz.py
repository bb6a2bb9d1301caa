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
def dense_similarity(model, processor, image: Image.Image, text: str, walk_type: str | None = None) -> torch.Tensor:
    """Similarity map [h, w] of ``image`` with ``text`` for an FG-CLIP (v1) or FG-CLIP 2 model and its processor.

    The text walk defaults to the one the family's dense features live in: ``"short"`` for v1, ``"box"`` for
    FG-CLIP 2.
    """
    inputs = processor(images=[image])
    if "spatial_shapes" in inputs:  # FG-CLIP 2 (NaFlex)
        walk = walk_type or "box"
        shapes = inputs["spatial_shapes"]
        dense = model.get_image_dense_features(inputs["pixel_values"], inputs["pixel_attention_mask"], shapes)[0]
        grid = tuple(shapes[0].tolist())
    else:
        walk = walk_type or "short"
        dense = model.get_image_dense_features(inputs["pixel_values"])[0]
        side = inputs["pixel_values"].shape[-1] // model.config.vision_config.patch_size
        grid = (inputs["pixel_values"].shape[-2] // model.config.vision_config.patch_size, side)
    tokens = processor(text=[text], walk_type=walk)
    text_embed = model.get_text_features(tokens["input_ids"], tokens.get("attention_mask"), walk_type=walk)[0]
    return similarity_map(dense, text_embed, grid)


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
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError('plot_similarity_map needs matplotlib: pip install "fgclip-model[viz]"') from err
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
