"""``benchmark``: the fgclip benchmark suite (not implemented yet: only ``--help`` works)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="benchmark",
        description="Zero-shot retrieval, classification, box classification, FG-OVD and segmentation benchmarks. "
        "NOT IMPLEMENTED YET: this release only declares the command; the suite lands with the fgclip-eval issue.",
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("benchmark: not implemented yet (see the fgclip-eval issue); run `benchmark --help`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
