"""Contact sheets of search hits (the ``[viz]`` extra): each hit's image under the query's dense similarity map
(:func:`fgclip_model.viz.dense_similarity`, for families with dense features), a region hit's box drawn on it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from PIL import Image

from fgclip_model.embed.loader import read_image
from fgclip_model.embed.search import Hit, Searcher


def hit_image(hit: Hit) -> Image.Image:
    """The image of a hit: its file, or its member of the WebDataset tar in the ``shard`` column."""
    shard = hit.metadata.get("shard")
    if shard:
        with tarfile.open(shard) as tar:
            return Image.open(io.BytesIO(tar.extractfile(hit.metadata["image_path"]).read())).convert("RGB")
    return read_image(hit.metadata["image_path"])


def contact_sheet(searcher: Searcher, query: str, hits: list[Hit], path: str | os.PathLike, columns: int = 4):
    """Write a PNG grid of ``hits`` (from ``searcher.search(query)``) with the query's similarity map over each
    image; returns the matplotlib figure."""
    from fgclip_model.auto import FAMILIES
    from fgclip_model.viz import _pyplot, dense_similarity

    plt = _pyplot()
    dense = FAMILIES[searcher.family].regions
    rows = max(1, -(-len(hits) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    regions = bool(hits) and "region" in hits[0].metadata
    for ax, hit in zip(axes.flat, hits, strict=False):
        try:
            image = hit_image(hit)
        except (OSError, ValueError, KeyError) as err:
            ax.set_title(f"#{hit.rank + 1} unreadable ({err})", fontsize=8)
            continue
        ax.imshow(image)
        if dense:
            walk = searcher.walk(regions)
            sim = dense_similarity(searcher.model, searcher.processor, image, query, walk_type=walk)
            extent = (0, image.width, image.height, 0)
            ax.imshow(sim.float().numpy(), cmap="jet", alpha=0.45, extent=extent, interpolation="bilinear")
        if regions:
            m, w, h = hit.metadata, image.width, image.height
            x1, y1, x2, y2 = m["x1"] * w, m["y1"] * h, m["x2"] * w, m["y2"] * h
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=2))
        name = Path(str(hit.metadata.get("key", ""))).name
        ax.set_title(f"#{hit.rank + 1} {hit.score:.3g} {name[:24]}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(query if len(query) <= 80 else query[:77] + "...")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
