"""``fgclip-model``: model utilities on the command line.

``fgclip-model export onnx --model PATH --out DIR`` writes the image encoder and every text walk as ONNX graphs
(checked against PyTorch with ONNX Runtime) plus the processor's files and a manifest.

``fgclip-model export diffusers --model LONGCLIP --out DIR [--base SD_FOLDER]`` writes Long-CLIP as Stable
Diffusion's text encoder (``text_encoder/``, ``tokenizer/``, ``text_encoder.safetensors``); with an SDXL ``--base``
its second encoder is stretched to the same length (``text_encoder_2/``, ``tokenizer_2/``).

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
    onnx.set_defaults(run=_export_onnx)
    diffusion = formats.add_parser("diffusers", help="Long-CLIP as a Stable Diffusion (1.x / XL) text encoder")
    diffusion.add_argument("--model", required=True, help="a Long-CLIP .pt file or checkpoint folder")
    diffusion.add_argument("--out", required=True, help="output folder")
    diffusion.add_argument(
        "--base",
        help="a diffusers pipeline folder: its tokenizers are reused; an SDXL one's text_encoder_2 is stretched",
    )
    diffusion.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    diffusion.set_defaults(run=_export_diffusers)
    from fgclip_model.embed.cli import add_embed_parser, add_search_parser, run

    add_embed_parser(commands)
    add_search_parser(commands)
    commands.choices["embed"].set_defaults(run=run)  # its own one-line errors, named by subcommand
    commands.choices["search"].set_defaults(run=run)
    return parser


def _export_onnx(args: argparse.Namespace) -> int:
    import fgclip_model
    from fgclip_model.export import export_onnx

    model, processor = fgclip_model.load(args.model)
    result = export_onnx(model, args.out, processor, opset=args.opset, check=not args.no_check)
    for name, graph in result.graphs.items():
        diff = result.max_abs_diff.get(name)
        shown = f"  max |onnx - torch| = {diff:.2e}" if diff is not None else ""
        print(f"{result.folder / graph.file}{shown}")
    return 0


def _export_diffusers(args: argparse.Namespace) -> int:
    from fgclip_model.longclip.diffusion import export_diffusers_cli

    result = export_diffusers_cli(args.model, args.out, base=args.base, dtype=args.dtype)
    for folder in result.components.values():
        print(folder)
    for file in result.single_files.values():
        print(file)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"fgclip-model: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
