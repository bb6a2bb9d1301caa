"""The supervised ceiling of a vision tower on FG-Shapes boxes.

Trains only the FG-CLIP 2 vision tower (and its dense head) of the FG-Shapes preset, with four linear heads on
each box's region feature (colour, shape, size, position) and cross-entropy on the generator's true attributes.
No text, no contrastive loss: what it reaches in N steps bounds what the contrastive recipe can reach in N steps
with the same tower, resolution and optimiser. Scenes are generated in memory (the same generator and seed as
the training default); the last 10 % are held out.

    uv run python tools/fgshapes/probe.py --patches 256 --steps 400 --lr 2e-3
    uv run python tools/fgshapes/probe.py --features dense --out probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fgclip_data.fgshapes.generate import COLORS, POSITIONS, SHAPES, SIZES, GenerateOptions, make_scene
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor
from fgclip_model.tiny import tower

ATTRIBUTES = {"colour": list(COLORS), "shape": list(SHAPES), "size": list(SIZES), "position": list(POSITIONS)}


def scenes(n: int, seed: int) -> list[tuple]:
    """(image, [(box, colour, shape, size, position indices)]) of FG-Shapes scenes 0..n-1."""
    options = GenerateOptions(n=n, seed=seed, workers=1)
    out = []
    for index in range(n):
        image, shapes, _ = make_scene(index, options)
        labels = [
            (
                list(s.box),
                *(
                    values.index(getattr(s, key))
                    for key, values in zip(("color", "shape", "size", "position"), ATTRIBUTES.values(), strict=True)
                ),
            )
            for s in shapes
        ]
        out.append((image, labels))
    return out


def collate(processor, items, patches: int):
    inputs = processor([im for im, _ in items], max_num_patches=patches, dynamic_max_patches=False, return_tensors="pt")
    boxes = [torch.tensor([obj[0] for obj in objects]) for _, objects in items]
    labels = torch.tensor([obj[1:] for _, objects in items for obj in objects])
    return dict(inputs), boxes, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patches", type=int, default=64, help="patch budget per image")
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--dense-head-init", default="local", choices=("random", "local"))
    p.add_argument(
        "--features",
        default="dense",
        choices=("dense", "tokens"),
        help="region features from the dense head (as training / evaluation) or the backbone's tokens",
    )
    p.add_argument("--position-init", default="normal", choices=("normal", "sincos"))
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the curve as JSON")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    processor = FGCLIP2ImageProcessor(patch_size=a.patch_size)
    data = scenes(a.scenes, a.seed)
    held_out = max(1, a.scenes // 10)
    train, val = data[:-held_out], data[-held_out:]
    val_batches = [collate(processor, val[i : i + 64], a.patches) for i in range(0, len(val), 64)]
    config = FGCLIP2Config(
        text_config={
            **tower(32, 1, 2, 2),
            "vocab_size": 64,
            "max_position_embeddings": 8,
            "longtext_len": 16,
            "keep_len": 4,
            "projection_size": 32,
        },
        vision_config={**tower(a.width, a.layers, 4, 4), "num_patches": a.patches, "patch_size": a.patch_size},
        dense_head_init=a.dense_head_init,
        position_init=a.position_init,
    )
    model = FGCLIP2Model(config).train()
    heads = torch.nn.ModuleList(torch.nn.Linear(a.width, len(v)) for v in ATTRIBUTES.values())
    params = [*model.vision_model.parameters(), *model.dense_feature_head.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-6)
    warmup = 20
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps))
    )

    def features(inputs, boxes):
        if a.features == "dense":
            return torch.cat(model.get_image_region_features(**inputs, boxes=boxes))
        shapes = inputs["spatial_shapes"]
        tokens = model.vision_model(inputs["pixel_values"], inputs["pixel_attention_mask"], shapes)
        return model._region_features(tokens, shapes, boxes)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        hits, total = torch.zeros(len(heads) + 1), 0
        for inputs, boxes, labels in val_batches:
            f = features(inputs, boxes)
            right = torch.stack([h(f).argmax(1) == labels[:, j] for j, h in enumerate(heads)], 1)
            hits += torch.cat([right.float().sum(0), right.all(1).float().sum()[None]])
            total += len(labels)
        model.train()
        return dict(zip([*ATTRIBUTES, "all four"], (hits / total).tolist(), strict=True))

    rng, step, start, curve = np.random.default_rng(a.seed), 0, time.perf_counter(), []
    bar = tqdm(total=a.steps, desc="probe", unit="step")
    while step < a.steps:
        order = rng.permutation(len(train))
        for s in range(0, len(order) - a.batch_size + 1, a.batch_size):
            inputs, boxes, labels = collate(processor, [train[j] for j in order[s : s + a.batch_size]], a.patches)
            f = features(inputs, boxes)
            loss = sum(F.cross_entropy(h(f), labels[:, j]) for j, h in enumerate(heads))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            bar.update()
            if step % a.eval_every == 0 or step == a.steps:
                row = {"step": step, "loss": loss.item(), **evaluate(), "seconds": time.perf_counter() - start}
                curve.append(row)
                tqdm.write(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            if step == a.steps:
                break
    bar.close()
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"arguments": vars(a), "curve": curve}, f, indent=2)


if __name__ == "__main__":
    main()
