"""The shard loader's throughput (decode, resize, boxes, tokenise)."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def loader_rows(args) -> list[dict]:
    """Decode + resize + tokenise throughput of the shard stream on one core (FG-Shapes JPEGs)."""
    import tempfile

    from transformers import CLIPImageProcessor

    from fgclip_data import FGCLIPCollator, FineHARDShards, ImageResize
    from fgclip_data.fgshapes.generate import GenerateOptions, generate
    from fgclip_data.shards import write_shards
    from fgclip_data.tokenizer import build_word_tokenizer

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shapes"
        generate(
            folder,
            GenerateOptions(n=args.loader_samples, seed=0, workers=1, min_size=320, max_size=640, val_fraction=0.0),
        )
        write_shards(folder / "jsonfiles" / "train", folder / "grit-12m", Path(tmp) / "shards", shard_size=200)
        dataset = FineHARDShards(Path(tmp) / "shards", resize=ImageResize(square=224))
        from fgclip_data import read_records

        texts = [
            t for r in read_records(folder / "jsonfiles" / "train") for t in (r.record.caption, r.record.short_caption)
        ]
        tokenizer = build_word_tokenizer(texts, "fgclip")
        image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224)
        collate = FGCLIPCollator(tokenizer, image_processor, max_boxes=4, add_box_loss=True, use_hard_neg=True)
        torch.set_num_threads(1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=0, collate_fn=collate)
        start = time.perf_counter()
        n = sum(batch.pixel_values.shape[0] for batch in loader)
        seconds = time.perf_counter() - start
        out.append(
            {
                "what": "shard stream -> FG-CLIP batch (decode, 224 squash, boxes, tokenise)",
                "samples": n,
                "seconds": seconds,
                "samples_per_s_per_core": n / seconds,
            }
        )
    return out
