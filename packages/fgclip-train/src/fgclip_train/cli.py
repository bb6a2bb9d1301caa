"""``stage1`` / ``stage2``: FG-CLIP v1 / FG-CLIP 2 training on DeepSpeed, the papers' two stages.

``stage1`` is global alignment on long and short captions; ``stage2`` adds region alignment and hard negatives
and can start from a stage-1 run (``--model.init=runs/fgshapes-stage1``). With no arguments each trains a small
FG-CLIP 2 from scratch on FG-Shapes (generated into the cache once) on the CPU and prints validation metrics
before and after. ``--preset fgclip-v1`` / ``--preset fgclip2`` (and their ``-stage1`` variants) reproduce the
reference recipes; any field can be overridden with ``--section.field=value``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import PRESETS, dump_config, load_config

METRIC_NAMES = {
    "i2t_r1_short": "image->text R@1 (short captions)",
    "t2i_r1_short": "text->image R@1 (short captions)",
    "i2t_r1_long": "image->text R@1 (long captions)",
    "t2i_r1_long": "text->image R@1 (long captions)",
    "hard_negative_acc": "hard-negative accuracy (1 of 11)",
    "hard_win_color": "  true caption beats a colour rewrite",
    "hard_win_shape": "  true caption beats a shape rewrite",
    "hard_win_size": "  true caption beats a size rewrite",
    "hard_win_position": "  true caption beats a position rewrite",
    "box_cls_acc": "box classification accuracy",
}


def build_parser(prog: str = "stage2", description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or __doc__.split("\n\n")[0],
        epilog="Presets: " + ", ".join(PRESETS) + ". Launch on several processes with torchrun or deepspeed.",
    )
    parser.add_argument("--config", help="a YAML file (any subset of the --show-config output)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from this preset")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def format_metrics(results: dict) -> str:
    before, after = results.get("before") or {}, results.get("after") or {}
    keys = [k for k in METRIC_NAMES if k in before or k in after]
    if not keys:
        return ""
    lines = [f"{'metric':45s} {'before':>8s} {'after':>8s}"]
    for k in keys:
        b = f"{before[k]:.3f}" if k in before else "-"
        a = f"{after[k]:.3f}" if k in after else "-"
        lines.append(f"{METRIC_NAMES[k]:45s} {b:>8s} {a:>8s}")
    return "\n".join(lines)


def _one_line(err: ValueError) -> str:
    """pydantic's multi-line report as one line: ``field: message`` for each error."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in err.errors()
        )
    return str(err)


def main(
    argv: list[str] | None = None,
    prog: str = "stage2",
    description: str | None = None,
    stage: int | None = None,
    default_preset: str | None = None,
) -> int:
    """The training command ``prog``; ``stage`` (1 or 2) refuses presets of the other stage, ``default_preset``
    is used when neither ``--preset`` nor a config file names one."""
    args, overrides = build_parser(prog, description).parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        print(f"{prog}: error: overrides look like --section.field=value, got {bad}", file=sys.stderr)
        return 2
    preset = args.preset
    if preset is None and default_preset and not any(o.startswith("--preset=") for o in overrides):
        named = args.config and "preset" in _config_keys(args.config)
        preset = None if named else default_preset
    try:
        config = load_config(args.config, overrides, preset)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        print(f"{prog}: invalid configuration: {_one_line(err)}", file=sys.stderr)
        return 2
    if stage is not None and config.stage != stage:
        same = ", ".join(name for name, p in PRESETS.items() if p.get("stage", 2) == stage)
        print(f"{prog}: preset {config.preset} is a stage-{config.stage} run; {prog} presets: {same}", file=sys.stderr)
        return 2
    if args.show_config:
        print(dump_config(config, comments=True), end="")
        return 0
    import torch.distributed as dist

    from fgclip_data.report import DataError

    from .checkpoint import UnsafeCheckpoint
    from .loop import finish_distributed, train
    from .preflight import RunError

    caller_group = dist.is_available() and dist.is_initialized()  # a group this call did not start stays up
    try:
        results = train(config)
    except (RunError, UnsafeCheckpoint, DataError, FileNotFoundError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    finally:
        if not caller_group:
            finish_distributed()
    if results is not None and results.get("steps") is not None:
        table = format_metrics(results)
        if table:
            print(table)
        print(json.dumps({k: results[k] for k in ("steps", "seconds", "skipped", "checkpoint")}, indent=None))
    return 0


def _config_keys(file: str) -> set[str]:
    from .config import read_config_file

    try:
        return set(read_config_file(file))
    except ValueError:
        return set()  # load_config reports the file's problem


def stage1(argv: list[str] | None = None) -> int:
    """``stage1``: global alignment only (FG-Shapes by default, preset fgshapes-stage1)."""
    return main(argv, "stage1", __doc__.split("\n\n")[0], stage=1, default_preset="fgshapes-stage1")


def stage2(argv: list[str] | None = None) -> int:
    """``stage2``: regions and hard negatives on top of the global losses (FG-Shapes by default)."""
    return main(argv, "stage2", stage=2)


if __name__ == "__main__":  # python -m fgclip_train.cli [stage1|stage2] ... (stage2 when not named)
    if len(sys.argv) > 1 and sys.argv[1] in ("stage1", "stage2"):
        command = stage1 if sys.argv[1] == "stage1" else stage2
        sys.exit(command(sys.argv[2:]))
    sys.exit(stage2())
