"""Render a small COCO-layout data set the project does not ship: "tabletop" scenes of everyday objects.

Made to measure import → fine-tune → ``benchmark --tasks coco,coco-box`` on data unlike FG-Shapes: other
categories (apple, banana, cup, book, lamp, tree, car, house, fish, umbrella, flower, clock, balloon, kite), objects
built from several parts, textured backgrounds (wood, grass, tiles, sky, cloth) with a light gradient, noise and
soft shadows, colours per object where the category allows. Every image has 5 captions (templated, each a
different wording, most naming colours, the background and where the objects are) and one box per object.

Written in COCO's own layout, which ``fgclip-data import coco`` and the benchmark's ``coco`` / ``coco-box`` tasks
read (``--data-root OUT``)::

    OUT/coco/images/train2017/000000000001.jpg ...     OUT/coco/images/val2017/...
    OUT/coco/annotations/captions_train2017.json       OUT/coco/annotations/captions_val2017.json
    OUT/coco/annotations/instances_train2017.json      OUT/coco/annotations/instances_val2017.json

Boxes are COCO's pixel ``[x, y, w, h]``; image ``i`` depends only on ``(seed, split, i)``.

    uv run python tools/finetune/make_coco_like.py --out data/tabletop --train 2000 --val 500
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PALETTE = {
    "red": (200, 40, 40), "green": (50, 150, 60), "blue": (45, 85, 200), "yellow": (235, 200, 40),
    "purple": (130, 60, 170), "orange": (240, 130, 30), "pink": (235, 130, 170), "brown": (120, 75, 40),
    "white": (240, 240, 235), "black": (30, 30, 30),
}  # fmt: skip
# category -> colours it may have (its first colour is its usual one)
CATEGORIES = {
    "apple": ("red", "green", "yellow"), "banana": ("yellow",), "cup": ("white", "red", "blue", "black"),
    "book": ("blue", "red", "green", "purple"), "lamp": ("yellow", "white", "black"), "tree": ("green",),
    "car": ("red", "blue", "black", "white", "yellow"), "house": ("brown", "white", "red"), "fish": ("orange", "blue"),
    "umbrella": ("red", "blue", "purple", "black"), "flower": ("pink", "red", "yellow", "purple"),
    "clock": ("white", "black"), "balloon": ("red", "blue", "pink", "green"), "kite": ("red", "orange", "purple"),
}  # fmt: skip
BACKGROUNDS = {
    "a wooden table": ((150, 105, 60), "stripes"), "green grass": ((80, 140, 60), "speckle"),
    "white tiles": ((215, 215, 210), "grid"), "a blue sky": ((130, 180, 230), "gradient"),
    "a grey cloth": ((150, 150, 155), "weave"),
}  # fmt: skip
NUMBERS = {2: "two", 3: "three", 4: "four"}


@dataclass
class Thing:
    category: str
    color: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels

    @property
    def name(self) -> str:
        return self.category if len(CATEGORIES[self.category]) == 1 else f"{self.color} {self.category}"

    def where(self, w: int, h: int) -> str:
        cx, cy = (self.box[0] + self.box[2]) / 2 / w, (self.box[1] + self.box[3]) / 2 / h
        col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
        row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
        if row and col:
            return f"in the {row} {col}"
        return f"on the {col}" if col else f"at the {row}" if row else "in the middle"


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _background(rng: np.random.Generator, w: int, h: int, kind: str) -> Image.Image:
    base, texture = BACKGROUNDS[kind]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 0.85 + 0.3 * (x / w * rng.uniform(-0.5, 0.5) + y / h * rng.uniform(0.2, 0.6))
    pattern = np.zeros((h, w), np.float32)
    if texture == "stripes":
        pattern = 12 * np.sin(y / rng.uniform(3, 6) + 2 * np.sin(x / 25))
    elif texture == "speckle":
        pattern = rng.normal(0, 14, (h, w))
    elif texture == "grid":
        step = int(rng.integers(18, 30))
        pattern = -35.0 * (((x % step) < 2) | ((y % step) < 2))
    elif texture == "gradient":
        light = 1.15 - 0.35 * y / h + 0 * x
    elif texture == "weave":
        pattern = 10 * np.sin(x / 1.5) * np.sin(y / 1.5)
    pixels = np.asarray(base, np.float32)[None, None] * light[..., None] + pattern[..., None]
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _shade(rgb, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * k))) for c in rgb)


def _draw(d: ImageDraw.ImageDraw, thing: Thing) -> None:
    x1, y1, x2, y2 = thing.box
    w, h = x2 - x1, y2 - y1
    c = PALETTE[thing.color]
    dark, light = _shade(c, 0.6), _shade(c, 1.25)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    kind = thing.category
    if kind == "apple":
        d.ellipse((x1, y1 + h * 0.15, x2, y2), fill=c, outline=dark)
        d.line((cx, y1 + h * 0.2, cx + w * 0.05, y1), fill=(90, 60, 30), width=max(1, w // 12))
        d.ellipse((cx + w * 0.05, y1, cx + w * 0.35, y1 + h * 0.15), fill=(60, 140, 50))
    elif kind == "banana":
        d.arc((x1, y1 - h * 0.8, x2, y2), 30, 150, fill=c, width=max(3, h // 3))
    elif kind == "cup":
        d.polygon([(x1, y1), (x1 + w * 0.75, y1), (x1 + w * 0.65, y2), (x1 + w * 0.1, y2)], fill=c, outline=dark)
        d.arc((x1 + w * 0.55, y1 + h * 0.2, x2, y1 + h * 0.65), 270, 90, fill=dark, width=max(2, w // 10))
        d.ellipse((x1, y1 - h * 0.06, x1 + w * 0.75, y1 + h * 0.08), fill=light, outline=dark)
    elif kind == "book":
        d.rectangle((x1, y1, x2, y2), fill=c, outline=dark)
        d.rectangle((x1, y1, x1 + w * 0.15, y2), fill=dark)
        for k in range(1, 4):
            d.line((x1 + w * 0.3, y1 + h * k / 4, x2 - w * 0.1, y1 + h * k / 4), fill=light, width=1)
    elif kind == "lamp":
        d.polygon([(x1 + w * 0.25, y1), (x2 - w * 0.25, y1), (x2, y1 + h * 0.45), (x1, y1 + h * 0.45)], fill=c)
        d.rectangle((cx - w * 0.06, y1 + h * 0.45, cx + w * 0.06, y2 - h * 0.1), fill=(70, 70, 70))
        d.rectangle((x1 + w * 0.2, y2 - h * 0.1, x2 - w * 0.2, y2), fill=(70, 70, 70))
    elif kind == "tree":
        d.rectangle((cx - w * 0.1, y1 + h * 0.55, cx + w * 0.1, y2), fill=(100, 65, 35))
        for dx, dy, r in ((0, 0.3, 0.38), (-0.2, 0.42, 0.28), (0.2, 0.42, 0.28)):
            d.ellipse((cx + (dx - r) * w, y1 + (dy - r) * h, cx + (dx + r) * w, y1 + (dy + r) * h), fill=c)
    elif kind == "car":
        d.rounded_rectangle((x1, y1 + h * 0.35, x2, y2 - h * 0.2), radius=max(1, h // 8), fill=c, outline=dark)
        d.polygon(
            [(x1 + w * 0.2, y1 + h * 0.35), (x1 + w * 0.35, y1), (x2 - w * 0.3, y1), (x2 - w * 0.15, y1 + h * 0.35)],
            fill=light,
        )
        for wx in (x1 + w * 0.22, x2 - w * 0.22):
            d.ellipse((wx - h * 0.2, y2 - h * 0.4, wx + h * 0.2, y2), fill=(25, 25, 25))
    elif kind == "house":
        d.rectangle((x1 + w * 0.1, y1 + h * 0.4, x2 - w * 0.1, y2), fill=c, outline=dark)
        d.polygon([(x1, y1 + h * 0.42), (cx, y1), (x2, y1 + h * 0.42)], fill=(150, 50, 40))
        d.rectangle((cx - w * 0.1, y2 - h * 0.3, cx + w * 0.1, y2), fill=(80, 50, 30))
    elif kind == "fish":
        d.ellipse((x1 + w * 0.2, y1 + h * 0.15, x2, y2 - h * 0.15), fill=c, outline=dark)
        d.polygon([(x1, y1), (x1 + w * 0.3, cy), (x1, y2)], fill=dark)
        d.ellipse((x2 - w * 0.22, cy - h * 0.12, x2 - w * 0.12, cy - h * 0.02), fill=(20, 20, 20))
    elif kind == "umbrella":
        d.pieslice((x1, y1, x2, y1 + h * 0.9), 180, 360, fill=c, outline=dark)
        d.line((cx, y1 + h * 0.45, cx, y2 - h * 0.1), fill=(60, 60, 60), width=max(1, w // 20))
        d.arc((cx, y2 - h * 0.2, cx + w * 0.15, y2), 0, 180, fill=(60, 60, 60), width=max(1, w // 20))
    elif kind == "flower":
        d.line((cx, cy, cx, y2), fill=(50, 130, 50), width=max(1, w // 12))
        r = min(w, h) * 0.18
        for k in range(6):
            a = k * math.pi / 3
            px, py = cx + math.cos(a) * r * 1.3, cy * 0.85 + y1 * 0.15 + math.sin(a) * r * 1.3
            d.ellipse((px - r, py - r, px + r, py + r), fill=c)
        d.ellipse(
            (cx - r * 0.7, cy * 0.85 + y1 * 0.15 - r * 0.7, cx + r * 0.7, cy * 0.85 + y1 * 0.15 + r * 0.7),
            fill=(240, 200, 40),
        )
    elif kind == "clock":
        d.ellipse((x1, y1, x2, y2), fill=c, outline=(90, 90, 90), width=max(1, w // 14))
        hand = (20, 20, 20) if thing.color == "white" else (235, 235, 235)
        d.line((cx, cy, cx, y1 + h * 0.18), fill=hand, width=max(1, w // 16))
        d.line((cx, cy, x2 - w * 0.25, cy), fill=hand, width=max(1, w // 16))
    elif kind == "balloon":
        d.ellipse((x1 + w * 0.1, y1, x2 - w * 0.1, y1 + h * 0.7), fill=c, outline=dark)
        d.line((cx, y1 + h * 0.7, cx - w * 0.1, y2), fill=(80, 80, 80), width=1)
        d.ellipse((cx - w * 0.22, y1 + h * 0.12, cx - w * 0.08, y1 + h * 0.25), fill=light)
    elif kind == "kite":
        d.polygon([(cx, y1), (x2, y1 + h * 0.35), (cx, y1 + h * 0.8), (x1, y1 + h * 0.35)], fill=c, outline=dark)
        d.line((cx, y1 + h * 0.8, cx + w * 0.2, y2), fill=(60, 60, 60), width=1)


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def scene(seed: int, split: str, index: int, min_size: int, max_size: int):
    """(image, things, background) of one image; depends only on its arguments."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    image = _background(rng, w, h, background)
    things: list[Thing] = []
    n = int(rng.integers(1, 5))
    names = list(CATEGORIES)
    for _ in range(40):
        if len(things) == n:
            break
        category = names[int(rng.integers(len(names)))]
        colors = CATEGORIES[category]
        color = colors[int(rng.integers(len(colors)))]
        side = rng.uniform(0.22, 0.45) * min(w, h)
        bw, bh = int(side * rng.uniform(0.8, 1.25)), int(side * rng.uniform(0.8, 1.25))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        box = (x1, y1, x1 + bw, y1 + bh)
        if all(_overlap(box, t.box) < 0.15 for t in things):
            things.append(Thing(category, color, box))
    shadow = Image.new("L", image.size, 0)
    sd = ImageDraw.Draw(shadow)
    for t in things:
        x1, y1, x2, y2 = t.box
        sd.ellipse((x1 + 3, y2 - (y2 - y1) * 0.15, x2 + 3, y2 + 4), fill=90)
    image.paste((0, 0, 0), mask=shadow.filter(ImageFilter.GaussianBlur(4)))
    draw = ImageDraw.Draw(image)
    for t in things:
        _draw(draw, t)
    return image.filter(ImageFilter.GaussianBlur(0.6)), things, background


def captions(things: list[Thing], background: str, w: int, h: int, rng: np.random.Generator) -> list[str]:
    """Five captions of one scene, each in its own wording."""
    names = [_a(t.name) for t in things]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    counts: dict[str, int] = {}
    for t in things:
        counts[t.category] = counts.get(t.category, 0) + 1
    plain = [(_a(c) if k == 1 else f"{NUMBERS[k]} {c}s") for c, k in counts.items()]
    plain_listed = plain[0] if len(plain) == 1 else ", ".join(plain[:-1]) + " and " + plain[-1]
    placed = "; ".join(f"{_a(t.name)} {t.where(w, h)}" for t in things)
    first = things[0]
    out = [
        f"{listed.capitalize()} on {background}.",
        f"A picture of {plain_listed} on {background}.",
        f"{placed.capitalize()}.",
        f"{_a(first.name).capitalize()} {first.where(w, h)} of the picture, on {background}.",
        f"There {'is' if len(things) == 1 else 'are'} {plain_listed} in this image.",
    ]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def write_split(out: Path, split: str, n: int, seed: int, min_size: int, max_size: int, first_id: int) -> dict:
    folder = out / "coco" / "images" / f"{split}2017"
    folder.mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(CATEGORIES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, caps, boxes = [], [], []
    for i in range(n):
        image_id = first_id + i
        image, things, background = scene(seed, split, i, min_size, max_size)
        name = f"{image_id:012d}.jpg"
        image.save(folder / name, quality=90)
        w, h = image.size
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        rng = np.random.default_rng([seed, 7, image_id])
        for text in captions(things, background, w, h, rng):
            caps.append({"id": len(caps) + 1 + first_id * 10, "image_id": image_id, "caption": text})
        for t in things:
            x1, y1, x2, y2 = t.box
            boxes.append(
                {"id": len(boxes) + 1 + first_id * 10, "image_id": image_id, "category_id": cat_id[t.category],
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            )  # fmt: skip
    annotations = out / "coco" / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    info = {"description": "tabletop scenes rendered by tools/finetune/make_coco_like.py", "seed": seed}
    (annotations / f"captions_{split}2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": caps})
    )
    (annotations / f"instances_{split}2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": boxes, "categories": categories})
    )
    return {"images": len(images), "captions": len(caps), "boxes": len(boxes)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="data root (the benchmark's --data-root)")
    parser.add_argument("--train", type=int, default=2000, help="train2017 images")
    parser.add_argument("--val", type=int, default=500, help="val2017 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-size", type=int, default=160)
    parser.add_argument("--max-size", type=int, default=256)
    args = parser.parse_args(argv)
    counts = {
        "train": write_split(args.out, "train", args.train, args.seed, args.min_size, args.max_size, 1),
        "val": write_split(args.out, "val", args.val, args.seed, args.min_size, args.max_size, 1_000_000),
    }
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
