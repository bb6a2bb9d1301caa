"""Bulk embeddings and search (``pip install "fgclip-model[embed]"``: pyarrow, and faiss-cpu for indexes).

``fgclip-model embed``: an image folder, WebDataset tars, a table of paths, FineHARD records (with region
embeddings for their boxes) or a text file -> embeddings in clip-retrieval's layout (``img_emb/``, ``text_emb/``,
``metadata/``; ``region_emb/``, ``region_metadata/``), resumable and sharded over torchrun ranks.
``fgclip-model search``: a text query -> the top-k images or regions of such a folder, scored as the family scores
image-text pairs.

Modules: ``inputs`` (the source registry), ``loader`` (decoding in workers), ``writer`` (the layout, atomic
parts), ``encode`` (model calls and scores), ``runner`` (the job), ``search``, ``sheet`` (contact sheets), ``cli``.
``import fgclip_model`` never imports this package, so pyarrow stays optional.
"""

from __future__ import annotations

from fgclip_model.embed.runner import EmbedConfig, EmbedResult, embed

__all__ = ["EmbedConfig", "EmbedResult", "embed"]
