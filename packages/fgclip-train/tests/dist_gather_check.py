"""Run by test_distributed.py (alone, or under ``torchrun --nproc_per_node 2``): the global stage-2 losses of one
global batch, with the features gathered across ranks, and the rank-averaged gradients (what DeepSpeed applies).

Usage: python dist_gather_check.py FAMILY FGSHAPES_DIR OUT.pt
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from fgclip_data import FineHARDDataset, ImageResize, SampleOptions, read_records
from fgclip_data.tokenizer import build_word_tokenizer
from fgclip_train.config import load_config
from fgclip_train.data import ResumableBatchSampler
from fgclip_train.families import get_family

GLOBAL_BATCH = 8


def main(family: str, folder: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    preset = "fgshapes" if family == "fgclip2" else "fgshapes-v1"
    config = load_config(
        preset=preset,
        overrides=[
            "--loss.region=false",
            "--loss.hard_negatives=false",
            "--model.size.text_config.num_hidden_layers=1",
            "--model.size.vision_config.num_hidden_layers=1",
            *(
                ["--model.size.vision_config.image_size=64"]
                if family == "fgclip"
                else ["--data.max_num_patches=16", "--data.min_num_patches=null"]
            ),
        ],
    )
    records = read_records(f"{folder}/jsonfiles/train")
    tokenizer = build_word_tokenizer((r.record.caption for r in records), family)
    torch.manual_seed(0)
    model = get_family(config.model.family).build_model(config, tokenizer)
    resize = ImageResize(square=64) if family == "fgclip" else ImageResize()
    data = FineHARDDataset(records, f"{folder}/grit-12m", SampleOptions(), resize)
    sampler = ResumableBatchSampler(len(data), GLOBAL_BATCH // world, world, rank, seed=3)
    indices = next(iter(sampler))
    collate = get_family(config.model.family).build_collator(
        config, tokenizer, model.config, 64 if family == "fgclip" else None
    )
    out_ = model.compute_loss(collate([data[i] for i in indices]))
    out_.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.detach().clone()
            dist.all_reduce(g)
            grads[name] = g / world
    loss = out_.loss.detach().clone()
    dist.all_reduce(loss)
    if rank == 0:
        torch.save({"loss": loss / world, "grads": grads, "indices": indices}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
