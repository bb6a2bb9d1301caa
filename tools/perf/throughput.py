"""``benchmark``'s image throughput on COCO-sized JPEGs: images/s and the share of the image pass spent waiting for
decoded batches, for each backend and number of decoding workers (the benchmark's own ``Encoder``)."""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def coco_like_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 640 x 480 JPEGs (quality 90, ~100-200 kB like COCO's): smooth colour fields with texture."""
    rng = np.random.default_rng(seed)
    files = []
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        phase = rng.uniform(0, 6.28, 3)
        image = base + 60 * np.sin(xx[..., None] / rng.uniform(20, 80) + yy[..., None] / 50 + phase)
        image += rng.normal(0, 18, image.shape)
        file = folder / f"{i:012d}.jpg"
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(file, quality=90)
        files.append(file)
    return files


def throughput_rows(n: int, backends: list[str], tiny: bool) -> list[dict]:
    from models import v2_pair

    from fgclip_eval.encoders import Encoder
    from fgclip_eval.images import default_workers
    from fgclip_model import FGCLIP2ImageProcessor, FGCLIP2Processor
    from fgclip_model.backends import with_backend

    processor = FGCLIP2Processor(image_processor=FGCLIP2ImageProcessor(), tokenizer=None)
    model, _ = v2_pair(tiny, "cpu", torch.float32)
    results = []
    with tempfile.TemporaryDirectory(prefix="fgclip-perf-throughput-") as tmp:
        files = coco_like_jpegs(Path(tmp), n)
        megabytes = sum(f.stat().st_size for f in files) / n / 1e6
        for backend in backends:
            options = {"export_dir": Path(tmp) / "onnx"} if backend == "onnx" else {}  # not the user's cache
            fast = with_backend(model, backend, **options)
            for workers in sorted({0, default_workers()}):
                # per-image patch budgets (the benchmark's default), batches of 8
                encoder = Encoder(fast, processor, "fgclip2", batch_size=8, workers=workers, progress=False)
                encoder.images(files[: min(8, n)])  # warm-up (a compiled backend compiles here)
                encoder.stats = type(encoder.stats)()
                encoder.images(files)
                stats = encoder.stats.summary()
                results.append(
                    {
                        "backend": backend,
                        "workers": workers,
                        "images": n,
                        "jpeg_MB": round(megabytes, 3),
                        "images_per_second": stats["images_per_second"],
                        "decode_wait_share": stats["decode_wait_share"],
                    }
                )
                print(f"throughput {results[-1]}", file=sys.stderr)
            del fast, encoder
            gc.collect()
            torch._dynamo.reset()  # compiled graphs hold their frozen weights
    return results


def markdown(rows: list[dict]) -> str:
    lines = [
        "| backend | decoding workers | images/s | share of the pass waiting for decoded batches |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['images_per_second']:.2f} | {100 * r['decode_wait_share']:.1f} % |"
        )
    return "\n".join(lines)
