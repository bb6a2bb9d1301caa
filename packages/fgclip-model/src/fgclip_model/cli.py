"""``fgclip-model``: model utilities on the command line.

``fgclip-model export onnx --model PATH --out DIR`` writes the image encoder and every text walk as ONNX graphs
(checked against PyTorch with ONNX Runtime) plus the processor's files and a manifest.
``fgclip-model embed`` / ``fgclip-model search``: bulk embeddings and text search over them (the ``[embed]`` extra;
see :mod:`fgclip_model.embed`).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-model", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a model to another runtime")
    formats = export.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="ONNX graphs of the image encoder and every text walk")
    onnx.add_argument("--model", required=True, help="a checkpoint folder or hub id (FG-CLIP or FG-CLIP 2)")
    onnx.add_argument("--out", required=True, help="output folder")
    onnx.add_argument("--opset", type=int, default=18)
    onnx.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison with PyTorch")
    from fgclip_model.embed.cli import add_embed_parser, add_search_parser

    add_embed_parser(commands)
    add_search_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("embed", "search"):
        from fgclip_model.embed.cli import run

        return run(args)
    import fgclip_model
    from fgclip_model.export import export_onnx

    try:
        model, processor = fgclip_model.load(args.model)
        result = export_onnx(model, args.out, processor, opset=args.opset, check=not args.no_check)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"fgclip-model: {err}", file=sys.stderr)
        return 2
    for name, graph in result.graphs.items():
        diff = result.max_abs_diff.get(name)
        shown = f"  max |onnx - torch| = {diff:.2e}" if diff is not None else ""
        print(f"{result.folder / graph.file}{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
