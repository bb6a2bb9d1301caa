"""``fgclip-model embed`` and ``fgclip-model search``: argument parsers and their runs (exit 2 with one line on
bad input)."""

from __future__ import annotations

import argparse
import json
import sys

from fgclip_model.backends import CHOICES


def add_embed_parser(commands) -> None:
    p = commands.add_parser("embed", help="bulk embeddings in clip-retrieval's layout (resumable, torchrun-sharded)")
    p.add_argument("--model", required=True, help="a checkpoint folder, .pt file or hub id")
    p.add_argument("--input", required=True, help="image folder, WebDataset tar(s), table, FineHARD records, text file")
    p.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    p.add_argument("--input-format", choices=["folder", "webdataset", "table", "finehard", "text"])
    p.add_argument("--backend", choices=CHOICES, default="eager")
    p.add_argument("--device", default="cpu", help="cpu, cuda (rank r takes cuda:LOCAL_RANK) or a device")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    p.add_argument("--part-size", type=int, default=10_000, help="items per output part")
    p.add_argument("--fp16", action="store_true", help="store float16 embeddings")
    p.add_argument("--no-normalise", dest="normalise", action="store_false", help="keep raw (unnormalised) embeddings")
    p.add_argument("--regions", action=argparse.BooleanOptionalAction, default=None, help="region embeddings of boxes")
    p.add_argument("--text", action=argparse.BooleanOptionalAction, default=None, help="caption embeddings")
    p.add_argument("--text-walk", choices=["short", "long"], default="short")
    p.add_argument("--image-root", help="folder of relative image paths (default: the table's / records' folder)")
    p.add_argument("--path-column")
    p.add_argument("--caption-column")
    p.add_argument("--caption-field", choices=["short_caption", "caption"], default="short_caption")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", help="write this rank's summary as JSON here")


def add_search_parser(commands) -> None:
    p = commands.add_parser("search", help="top-k images or regions of an embed output for a text query")
    p.add_argument("--embeddings", required=True, help="an output folder of `fgclip-model embed`")
    p.add_argument("--query", required=True, action="append", help="a text query (repeatable)")
    p.add_argument("-k", "--top-k", type=int, default=10)
    p.add_argument("--regions", action="store_true", help="search the region embeddings")
    p.add_argument("--model", help="the model (default: the one that made the embeddings)")
    p.add_argument("--backend", choices=CHOICES, default="eager")
    p.add_argument(
        "--faiss", action=argparse.BooleanOptionalAction, default=None, help="use faiss (default: when installed)"
    )
    p.add_argument("--index", help="a faiss index over img_emb (e.g. built by autofaiss)")
    p.add_argument("--show", help="write a contact sheet PNG of the hits here (the [viz] extra)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON lines")


def run_embed(args) -> int:
    from fgclip_model.embed.runner import EmbedConfig, embed, result_json

    fields = set(EmbedConfig.__dataclass_fields__)
    config = EmbedConfig(**{k: v for k, v in vars(args).items() if k in fields})
    result = embed(config)
    print(result.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result_json(result), f, indent=2)
    return 0


def run_search(args) -> int:
    from fgclip_model.embed.search import Searcher

    searcher = Searcher(args.embeddings, args.model, args.backend, use_faiss=args.faiss, index=args.index)
    for query, hits in zip(args.query, searcher.search_many(args.query, args.top_k, args.regions), strict=True):
        for hit in hits:
            if args.json:
                print(json.dumps({"query": query, "rank": hit.rank, "score": hit.score, "cosine": hit.cosine,
                                  **hit.metadata}, default=str))  # fmt: skip
            else:
                box = (f" box [{hit.metadata['x1']:.3f} {hit.metadata['y1']:.3f} {hit.metadata['x2']:.3f} "
                       f"{hit.metadata['y2']:.3f}]" if args.regions else "")  # fmt: skip
                print(f"{query}\t{hit.rank + 1}\t{hit.score:.4f}\t{hit.cosine:.4f}\t{hit.metadata['key']}{box}")
        if args.show:
            from fgclip_model.embed.sheet import contact_sheet

            path = args.show if len(args.query) == 1 else _numbered(args.show, args.query.index(query))
            contact_sheet(searcher, query, hits, path)
            print(f"contact sheet: {path}", file=sys.stderr)
    return 0


def _numbered(path: str, n: int) -> str:
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}_{n}.{suffix}" if dot else f"{path}_{n}"


RUNS = {"embed": run_embed, "search": run_search}
# what a bad input raises: reported as one line, exit status 2
USER_ERRORS = (FileNotFoundError, ValueError, ImportError, OSError)


def run(args) -> int:
    try:
        return RUNS[args.command](args)
    except USER_ERRORS as err:
        print(f"fgclip-model {args.command}: {err}", file=sys.stderr)
        return 2
