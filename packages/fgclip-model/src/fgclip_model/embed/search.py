"""``search``: a text query -> the top-k images (or regions) of an ``embed`` output folder.

The similarity is exact: the query's cosine with every row, in batches over the memory-mapped ``.npy`` parts
(numpy / torch), or through faiss (``IndexFlatIP`` over the rows, or an index built by autofaiss with ``index=``)
when it is installed. Scores follow the family (:func:`fgclip_model.embed.encode.score`). Region queries use the
text walk region features were trained against (``box`` for FG-CLIP and FG-CLIP 2).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgclip_model.embed import writer
from fgclip_model.embed.encode import encode_texts, model_dim, normalise, score

# kind -> (embedding folder, metadata folder)
KINDS = {"image": ("img_emb", "metadata"), "region": ("region_emb", "region_metadata")}
CHUNK_ROWS = 65_536


@dataclass
class Hit:
    """One result: its place in the ranking, its row in the concatenated files, the family's score, the cosine
    similarity and the row's metadata (``key``, ``image_path``, ...; regions add ``region`` and the box)."""

    rank: int
    row: int
    score: float
    cosine: float
    metadata: dict[str, Any]


class EmbeddingFiles:
    """The finished parts of one kind (``image`` or ``region``) of an output folder, memory-mapped, in part order."""

    def __init__(self, folder: str | Path, kind: str = "image") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
        self.folder, self.kind = Path(folder), kind
        self.info = writer.read_info(self.folder)
        emb, meta = KINDS[kind]
        if kind == "region" and not self.info.get("regions"):
            raise ValueError(f"{self.folder} holds no region embeddings (embed FineHARD records with boxes)")
        if kind == "image" and not self.info.get("image", True):
            raise ValueError(f"{self.folder} holds no image embeddings (it was made from a text file)")
        parts = writer.done_parts(self.folder)
        if not parts:
            raise FileNotFoundError(f"{self.folder} has no finished part yet")
        n = self.info["parts"]
        self.parts = parts
        self.paths = [writer.part_path(self.folder, emb, p, n) for p in parts]
        self.meta_paths = [writer.part_path(self.folder, meta, p, n) for p in parts]
        self.arrays = [np.load(p, mmap_mode="r") for p in self.paths]
        self.offsets = np.cumsum([0, *(len(a) for a in self.arrays)]).tolist()
        self._meta: dict[int, list[dict[str, Any]]] = {}

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.info["parts"]

    def __len__(self) -> int:
        return self.offsets[-1]

    def chunks(self, rows: int = CHUNK_ROWS):
        """(first row, float32 array) over all rows, at most ``rows`` at a time."""
        for offset, array in zip(self.offsets, self.arrays, strict=False):
            for start in range(0, len(array), rows):
                yield offset + start, np.array(array[start : start + rows], dtype=np.float32)

    def metadata(self, row: int) -> dict[str, Any]:
        """The metadata of global row ``row``."""
        _, pq = writer.arrow()
        k = bisect.bisect_right(self.offsets, row) - 1
        if k not in self._meta:
            self._meta[k] = pq.read_table(self.meta_paths[k]).to_pylist()
        return self._meta[k][row - self.offsets[k]]


def exact_topk(files: EmbeddingFiles, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and rows [Q, k] of the ``k`` best rows for each normalised query [Q, D], exactly, in
    batches of rows (rows are normalised on the fly when the files are not)."""
    best_sim = torch.full((len(queries), 0), -2.0)
    best_row = torch.zeros((len(queries), 0), dtype=torch.long)
    for offset, chunk in files.chunks():
        rows = torch.from_numpy(chunk)
        if not files.info["normalised"]:
            rows = normalise(rows)
        sims = queries @ rows.T
        top = sims.topk(min(k, sims.shape[1]), dim=1)
        best_sim = torch.cat([best_sim, top.values], dim=1)
        best_row = torch.cat([best_row, top.indices + offset], dim=1)
        keep = best_sim.topk(min(k, best_sim.shape[1]), dim=1)
        best_sim, best_row = keep.values, best_row.gather(1, keep.indices)
    return best_sim, best_row


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_topk(
    files: EmbeddingFiles, queries: torch.Tensor, k: int, index_path: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`exact_topk` through faiss: a prebuilt index (autofaiss's output over ``img_emb/``; its ids are
    rows of the sorted files) or an exact ``IndexFlatIP`` built here. Needs normalised embeddings."""
    import faiss

    if not files.info["normalised"]:
        raise ValueError(f"{files.folder}: faiss searches by inner product, the embeddings are not normalised")
    if index_path is not None:
        index = faiss.read_index(str(index_path))
        if index.ntotal != len(files):
            raise ValueError(f"{index_path} indexes {index.ntotal} rows, {files.folder} has {len(files)} finished rows")
    else:
        index = faiss.IndexFlatIP(files.info["dim"])
        for _, chunk in files.chunks():
            index.add(np.ascontiguousarray(chunk))
    sims, rows = index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), min(k, len(files)))
    return torch.from_numpy(sims), torch.from_numpy(rows.astype(np.int64))


class Searcher:
    """Text queries against one output folder, with the model that made it (or ``model``: same family and width).

    ``use_faiss``: ``None`` uses faiss when it is installed and the embeddings are normalised; ``index``: a faiss
    index file over the image rows (e.g. built by autofaiss).
    """

    def __init__(
        self,
        folder: str | Path,
        model: str | None = None,
        backend: str = "eager",
        device: str = "cpu",
        use_faiss: bool | None = None,
        index: str | Path | None = None,
    ) -> None:
        from fgclip_model.embed.runner import load_model

        self.folder = Path(folder)
        self.info = writer.read_info(self.folder)
        self.model, self.processor, self.family, _ = load_model(model or self.info["model"], backend, device)
        if self.processor.tokenizer is None:
            raise ValueError(f"{model or self.info['model']} has no tokenizer: it cannot embed a text query")
        check_model(self.info, self.family, model_dim(self.model, self.processor, self.family), self.folder)
        self.use_faiss, self.index = use_faiss, index

    @cached_property
    def image_files(self) -> EmbeddingFiles:
        return EmbeddingFiles(self.folder, "image")

    @cached_property
    def region_files(self) -> EmbeddingFiles:
        return EmbeddingFiles(self.folder, "region")

    def walk(self, regions: bool) -> str:
        from fgclip_model.auto import FAMILIES

        return "box" if regions and FAMILIES[self.family].regions else "short"

    def embed_queries(self, queries: list[str], regions: bool = False) -> torch.Tensor:
        """Normalised query embeddings [Q, D] in the walk of the rows searched."""
        return normalise(encode_texts(self.model, self.processor, queries, self.family, self.walk(regions)))

    def search_many(self, queries: list[str], k: int = 10, regions: bool = False) -> list[list[Hit]]:
        """The top ``k`` images (or regions) of each query, best first."""
        files = self.region_files if regions else self.image_files
        q = self.embed_queries(queries, regions)
        use_faiss = self.use_faiss if self.use_faiss is not None else (faiss_available() and files.info["normalised"])
        if self.index is not None and not use_faiss:
            raise ValueError("index= needs faiss (pip install 'fgclip-model[faiss]')")
        if use_faiss:
            sims, rows = faiss_topk(files, q, k, None if regions else self.index)
        else:
            sims, rows = exact_topk(files, q, k)
        scores = score(self.model, sims, regions)
        return [
            [
                Hit(n, int(r), float(s), float(c), files.metadata(int(r)))
                for n, (r, s, c) in enumerate(zip(rows[i], scores[i], sims[i], strict=True))
                if r >= 0
            ]
            for i in range(len(queries))
        ]

    def search(self, query: str, k: int = 10, regions: bool = False) -> list[Hit]:
        return self.search_many([query], k, regions)[0]


def check_model(info: dict[str, Any], family: str, dim: int, folder: Path) -> None:
    """Refuse (one line) a model whose family or width differs from the one that made the embeddings."""
    for name, have in (("family", family), ("dim", dim)):
        if info.get(name) != have:
            raise writer.MismatchError(
                f"{folder} holds {info.get('family')} embeddings of dim {info.get('dim')}; the query model is "
                f"{family} of dim {dim}: search with the model that made them ({info.get('model')})"
            )


def search(folder: str | Path, query: str, k: int = 10, regions: bool = False, **options) -> list[Hit]:
    """One query against an ``embed`` output folder (``options``: :class:`Searcher`'s)."""
    return Searcher(folder, **options).search(query, k, regions)
