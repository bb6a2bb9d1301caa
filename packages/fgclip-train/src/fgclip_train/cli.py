"""``stage2``: FG-CLIP stage-2 training (not implemented yet: only ``--help`` works)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="stage2",
        description="FG-CLIP v1 / FG-CLIP 2 stage-2 training on DeepSpeed. NOT IMPLEMENTED YET: this release only "
        "declares the command; training lands with the fgclip-train issue.",
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("stage2: not implemented yet (see the fgclip-train issue); run `stage2 --help`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
