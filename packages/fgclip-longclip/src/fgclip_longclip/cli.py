"""``finetune``: Long-CLIP fine-tuning (77 -> 248 positions, Primary Component Matching) on fgclip-train's loop.

With no arguments it fine-tunes a small CLIP on FG-Shapes' long captions on the CPU and prints long- and
short-caption retrieval before and after. ``--preset longclip --model.init=CLIP --data.train=...`` is the
reference recipe on ShareGPT4V; any field can be overridden with ``--section.field=value``.
"""

from __future__ import annotations

import sys

from fgclip_train import cli as stage2_cli

from .family import register


def main(argv: list[str] | None = None) -> int:
    register()
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--preset" or a.startswith("--preset=") for a in args) and "--config" not in args:
        args = ["--preset", "longclip-fgshapes", *args]
    return stage2_cli.main(args, prog="finetune", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
