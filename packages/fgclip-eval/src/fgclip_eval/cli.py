"""``benchmark``: evaluate a checkpoint (FG-CLIP, FG-CLIP 2, Long-CLIP, or plain CLIP / SigLIP 2 as baselines) on
the benchmark tasks.

Tasks: FG-Shapes (the default), retrieval (COCO, Flickr30k, ShareGPT4V-1k, DCI, Urban1k, the Chinese sets),
classification (ImageNet-1k/-v2, ten torchvision sets), boxes (COCO, LVIS, BoxClass-CN, FG-OVD) and segmentation;
``--list`` shows them and their groups. Results go to JSON, a Markdown table and a PNG chart. Under
``torchrun --nproc_per_node N`` feature extraction is sharded over the processes; rank 0 writes the reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fgclip_model.backends import CHOICES

from .tasks import BadDataset, MissingDataset, NotApplicable, get_tasks


def newest_stage2_checkpoint(root: Path = Path("runs")) -> Path | None:
    found = sorted(root.glob("*/checkpoint-*/model/config.json"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="checkpoint folder, original Long-CLIP / OpenAI CLIP .pt state dict, or hub id resolved through the "
        "Hugging Face cache (default: the newest runs/*/checkpoint-*)",
    )
    parser.add_argument("--tasks", help="comma-separated task or group names, or 'all' (default: the FG-Shapes group)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the data sets (default: FG-Shapes in $FGCLIP_CACHE)",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bfloat16 on CUDA, else fp32"
    )
    parser.add_argument(
        "--backend",
        choices=CHOICES,
        default="eager",
        help="how features are computed: eager PyTorch, bf16 autocast, torch.compile (bf16 where native), ONNX "
        "Runtime (CPU, float32), int8 (ONNX Runtime, dynamically quantised: other numbers, a labelled choice), or "
        "auto (bf16 where the device has native bf16, else eager); see fgclip_model.backends",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: up to 4)")
    parser.add_argument("--paper", default=None, help="published-numbers row to compare with (default: by model name)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--max-num-patches",
        type=int,
        default=None,
        help="FG-CLIP 2: fixed patch budget (default: the dynamic bucket of each image)",
    )
    parser.add_argument(
        "--no-text-mask",
        action="store_true",
        help="FG-CLIP 2: encode text without the tokenizer's attention mask (the training convention) instead of "
        "with it (the reference evaluation scripts', which the published numbers used)",
    )
    parser.add_argument("--list", action="store_true", help="list the tasks and exit")
    return parser


class Refused(Exception):
    """A run that cannot start: one line for the user, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    """Parse, choose the model, load its encoder, run the tasks, report. Exit 2 on bad input (one line), 1 when
    every task was skipped."""
    args = build_parser().parse_args(argv)
    try:
        tasks = get_tasks(args.tasks.split(",") if args.tasks else None)
        if args.list:
            list_tasks()
            return 0
        data_root = args.data_root or _default_data_root()
        model = choose_model(args.model, data_root, args.output)
        paper = published_numbers(model, args.paper)
        encoder = load_encoder(args, model)
    except (Refused, ValueError) as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2
    results = run_tasks(tasks, encoder, data_root)
    report(results, encoder, model, paper, args.output)
    _finish_distributed()
    return 1 if all("skipped" in r for r in results.values()) else 0


def list_tasks() -> None:
    from .tasks import TASKS

    for task in TASKS.values():
        print(f"{task.name:30s} {task.description}  [{', '.join(task.groups)}]")


def choose_model(model: Path | None, data_root: Path, output: Path) -> Path:
    """``--model``, else the newest stage2 run's checkpoint, else a random tiny FG-CLIP 2 (a chance-level
    reference) saved under ``output``."""
    model = model or newest_stage2_checkpoint()
    if model is not None:
        return model
    print(
        "benchmark: no --model and no stage2 run under runs/: evaluating a random tiny FG-CLIP 2 (a chance-level "
        "reference; run `stage2` or pass --model for a real one)",
        file=sys.stderr,
    )
    try:
        return random_tiny_model(data_root, output / "random-tiny-model")
    except MissingDataset as err:
        raise Refused(str(err)) from err


def load_encoder(args: argparse.Namespace, model: Path):
    """The model's :class:`~fgclip_eval.encoders.Encoder` on the chosen device (the process group joined under
    torchrun), with the command line's precision, backend, patch budget and loader settings."""
    import torch

    from .distributed import init_from_env, is_main
    from .encoders import Encoder
    from .images import default_workers

    device = init_from_env(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return Encoder.load(
            model,
            device,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            backend=args.backend,
            max_num_patches=args.max_num_patches,
            batch_size=args.batch_size,
            workers=default_workers() if args.workers is None else args.workers,
            progress=not args.quiet and is_main(),
            text_attention_mask=False if args.no_text_mask else None,
        )
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise Refused(str(err)) from err


def run_tasks(tasks, encoder, data_root: Path) -> dict[str, dict]:
    """Each task's results; a task that cannot run is recorded as skipped with its reason (and said on stderr
    when the user can act on it)."""
    from .images import UnreadableImage

    results: dict[str, dict] = {}
    for task in tasks:
        try:
            results[task.name] = task.run(encoder, data_root)
        except MissingDataset as err:
            print(f"benchmark: {err}", file=sys.stderr)
            results[task.name] = {"skipped": "data set missing"}
        except (UnreadableImage, BadDataset) as err:
            print(f"benchmark: {task.name}: {err}", file=sys.stderr)
            results[task.name] = {"skipped": str(err)}
        except NotApplicable as err:
            results[task.name] = {"skipped": str(err)}
        except ImportError as err:  # an optional dependency of this task is not installed
            print(f"benchmark: {task.name}: {err}", file=sys.stderr)
            results[task.name] = {"skipped": f"missing dependency: {err}"}
    return results


def published_numbers(model: Path, explicit: str | None) -> dict | None:
    """The paper's numbers for the checkpoint (``--paper``, or recognised by name), ``None`` when unknown."""
    from .paper import PAPER, paper_key

    return PAPER.get(paper_key(model, explicit))


def report(results: dict[str, dict], encoder, model: Path, paper: dict | None, output: Path) -> None:
    """On the main process: the JSON / Markdown / PNG reports (with the paper's numbers when known) and a summary."""
    from .distributed import is_main
    from .report import markdown, throughput_line, write

    if not is_main():
        return
    throughput = encoder.stats.summary()
    files = write(results, output, str(model), paper, throughput)
    print(markdown(results, paper))
    print(f"throughput: {throughput_line(throughput)}")
    print(f"written: {', '.join(str(p) for p in files.values())}")


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def random_tiny_model(data_root: Path, folder: Path) -> Path:
    """A randomly initialised small FG-CLIP 2 with a tokenizer for the FG-Shapes vocabulary, saved in ``folder``."""
    import torch

    from fgclip_data import read_records
    from fgclip_data.tokenizer import build_word_tokenizer, vocab_size
    from fgclip_model.fgclip2 import FGCLIP2Model
    from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
    from fgclip_model.tiny import fgclip2_config

    from .tasks.fgshapes import locate

    records = [r.record for r in read_records(locate(data_root).val)]
    texts = [t for r in records for t in (r.caption, r.short_caption)]
    texts += [t for r in records for b in r.bbox_info for t in (b.short_expr, b.long_expr, *b.negatives)]
    tokenizer = build_word_tokenizer(texts, "fgclip2")
    config = fgclip2_config(vocab_size(tokenizer, "fgclip2"), short_length=24, long_length=96, keep=8)
    torch.manual_seed(0)
    FGCLIP2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    FGCLIP2ImageProcessor().save_pretrained(folder)
    return folder


def _default_data_root() -> Path:
    from fgclip_data.fgshapes import FGShapesFolder, cache_dir

    found = FGShapesFolder.in_cache()
    return found[0].root if found else cache_dir() / "fgshapes"


if __name__ == "__main__":
    sys.exit(main())
