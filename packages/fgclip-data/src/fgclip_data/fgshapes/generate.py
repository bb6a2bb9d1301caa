"""FG-Shapes: a deterministic FineHARD-format data set of coloured shapes, generated in seconds.

Every image holds 2–4 shapes, each with a colour, a shape, a size and a position. The records carry what
FineHARD carries — a long caption describing every object and their relations, a short caption, one box per
object with a short and a long region caption, and 10 hard negatives per box made by changing exactly one
attribute (colour, shape, size or position) — so fine-grained learning is measurable: a model must bind
attributes to the right object and place, not only recognise the scene.

Image ``i`` depends only on ``(seed, i)``; the files are written in the real FineHARD layout::

    OUT/grit-12m/coyo_image_0/{i // 10000:05d}/fgs{i:08d}.jpg      (f_path: grit-20m/data-12m/coyo_image_0/...)
    OUT/jsonfiles/train/*.json, OUT/jsonfiles/val/*.json            (English; JSON arrays, 10k records a file)
    OUT/jsonfiles/train_cn/*.json, OUT/jsonfiles/val_cn/*.json      (Chinese flavour, records with is_cn)
    OUT/manifest.json                                                (parameters, counts, vocabulary)
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# 2: no position negative that still describes the object ("on the left" for the top left)
# 3: the second region caption describes the box at a level of detail drawn per box (see region_description)
# 4: that level is the bare name three times as often as each other level (DETAIL_WEIGHTS)
GENERATOR_VERSION = 4
RECORDS_PER_FILE = 10_000

COLORS = {
    "red": ((215, 38, 38), "红色"),
    "green": ((34, 160, 60), "绿色"),
    "blue": ((38, 80, 220), "蓝色"),
    "yellow": ((240, 205, 30), "黄色"),
    "purple": ((135, 55, 180), "紫色"),
    "orange": ((245, 135, 25), "橙色"),
    "white": ((248, 248, 248), "白色"),
    "black": ((20, 20, 20), "黑色"),
}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形", "star": "星形"}
SIZES = {"small": ("小", (0.16, 0.26)), "large": ("大", (0.34, 0.48))}
# (row, column) of the 3x3 grid cell holding the object's centre -> phrase
POSITIONS = {
    (0, 0): ("in the top left", "左上方"),
    (0, 1): ("at the top", "上方"),
    (0, 2): ("in the top right", "右上方"),
    (1, 0): ("on the left", "左侧"),
    (1, 1): ("in the center", "中间"),
    (1, 2): ("on the right", "右侧"),
    (2, 0): ("in the bottom left", "左下方"),
    (2, 1): ("at the bottom", "下方"),
    (2, 2): ("in the bottom right", "右下方"),
}
# the side phrases name a whole row or column: "on the left" is true of every object in the left column
SIDE_LINES = {(1, 0): ("column", 0), (1, 2): ("column", 2), (0, 1): ("row", 0), (2, 1): ("row", 2)}


def position_describes(phrase_cell: tuple[int, int], cell: tuple[int, int]) -> bool:
    """Whether the position phrase of grid cell ``phrase_cell`` is true of an object centred in ``cell``: its own
    cell, or a side phrase ("on the left", "at the top" ...) whose row / column holds the object."""
    if phrase_cell == cell:
        return True
    if phrase_cell not in SIDE_LINES:
        return False
    axis, index = SIDE_LINES[phrase_cell]
    return cell[1] == index if axis == "column" else cell[0] == index


BACKGROUNDS = {"light grey": ((200, 200, 200), "浅灰色"), "dark grey": ((95, 95, 95), "深灰色")}
NUMBERS = {2: ("two", "两"), 3: ("three", "三"), 4: ("four", "四")}
ATTRIBUTES = ("color", "shape", "size", "position")


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    size: str
    position: tuple[int, int]
    box: tuple[float, float, float, float]  # normalised xyxy

    def phrase(self, **changes) -> str:
        """The shape's attribute phrase, or that of the shape with some attributes changed."""
        color, shape, size, position = self._changed(changes)
        return f"a {size} {color} {shape} {POSITIONS[position][0]}"

    def phrase_zh(self, **changes) -> str:
        color, shape, size, position = self._changed(changes)
        return f"{POSITIONS[position][1]}的{SIZES[size][0]}{COLORS[color][1]}{SHAPES[shape]}"

    def _changed(self, changes: dict) -> tuple:
        """(color, shape, size, position) with ``changes`` applied (the hard negatives phrase ~100 rewrites per
        scene: reading the attributes takes ~1.6 µs, building a changed copy ~4.3 µs)."""
        unknown = changes.keys() - {"color", "shape", "size", "position"}
        if unknown:
            raise TypeError(f"not attributes of a shape: {sorted(unknown)}")
        get = changes.get
        return (
            get("color", self.color),
            get("shape", self.shape),
            get("size", self.size),
            get("position", self.position),
        )

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def name_zh(self) -> str:
        return f"{COLORS[self.color][1]}{SHAPES[self.shape]}"

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass
class GenerateOptions:
    n: int = 10_000
    seed: int = 0
    min_size: int = 64
    max_size: int = 224
    val_fraction: float = 0.1
    lang: str = "en"  # "en", "zh" or "both"
    negatives: int = 10
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 8))

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if not 16 <= self.min_size <= self.max_size:
            raise ValueError(f"need 16 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.lang not in ("en", "zh", "both"):
            raise ValueError(f"lang must be en, zh or both, got {self.lang!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")

    def key(self) -> dict:
        """What determines the generated files (everything but the worker count)."""
        data = asdict(self)
        data.pop("workers")
        return {"version": GENERATOR_VERSION, **data}


# ---------------------------------------------------------------------------------------------------- drawing


def _polygon(kind: str, x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if kind == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if kind == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    points = []  # five-pointed star
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.45
        a = -math.pi / 2 + k * math.pi / 5
        points.append((cx + r * rx * math.cos(a), cy + r * ry * math.sin(a)))
    return points


def _draw(draw: ImageDraw.ImageDraw, kind: str, xyxy: tuple[int, int, int, int], rgb) -> None:
    if kind == "circle":
        draw.ellipse(xyxy, fill=rgb)
    elif kind == "square":
        draw.rectangle(xyxy, fill=rgb)
    else:
        draw.polygon(_polygon(kind, *xyxy), fill=rgb)


def _overlap(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(1e-9, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def make_scene(index: int, options: GenerateOptions) -> tuple[Image.Image, list[Shape], str]:
    """The image and objects of scene ``index`` (deterministic in ``(seed, index)``)."""
    rng = np.random.default_rng([options.seed, index])
    width, height = (int(v) for v in rng.integers(options.min_size, options.max_size + 1, size=2))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    image = Image.new("RGB", (width, height), BACKGROUNDS[background][0])
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(2, 5))
    shapes: list[Shape] = []
    side = min(width, height)
    for _ in range(400):  # rejection sampling: little overlap, every object described uniquely
        if len(shapes) == count:
            break
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        lo, hi = SIZES[size][1]
        extent = max(6, int(side * rng.uniform(lo, hi)))
        x1 = int(rng.integers(0, width - extent + 1))
        y1 = int(rng.integers(0, height - extent + 1))
        box = (x1 / width, y1 / height, (x1 + extent) / width, (y1 + extent) / height)
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        if BACKGROUNDS[background][0] == COLORS[color][0]:
            continue
        kind = list(SHAPES)[int(rng.integers(len(SHAPES)))]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        position = (min(int(cy * 3), 2), min(int(cx * 3), 2))
        candidate = Shape(color, kind, size, position, box)
        if any(_overlap(box, s.box) > 0.15 for s in shapes):
            continue
        if any(s.phrase() == candidate.phrase() or s.name == candidate.name for s in shapes):
            continue
        shapes.append(candidate)
        _draw(draw, kind, (x1, y1, x1 + extent - 1, y1 + extent - 1), COLORS[color][0])
    if len(shapes) < 2:  # pragma: no cover - 400 draws never fail in practice
        raise RuntimeError(f"scene {index}: could not place two shapes")
    return image, shapes, background


# --------------------------------------------------------------------------------------------------- captions


def _relation(a: Shape, b: Shape) -> tuple[str, str]:
    (ax, ay), (bx, by) = a.center, b.center
    if abs(ax - bx) >= abs(ay - by):
        return ("to the left of", "左边") if ax < bx else ("to the right of", "右边")
    return ("above", "上面") if ay < by else ("below", "下面")


def _a(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def _join(items: list[str], zh: bool = False) -> str:
    if zh:
        return "、".join(items[:-1]) + "和" + items[-1] if len(items) > 1 else items[0]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def captions(shapes: list[Shape], background: str) -> dict[str, str]:
    """Long and short captions, English and Chinese."""
    count_en, count_zh = NUMBERS[len(shapes)]
    things = _join([f"{s.phrase()}" for s in shapes])
    relations = []
    relations_zh = []
    for a, b in itertools.pairwise(shapes):
        rel, rel_zh = _relation(a, b)
        relations.append(f"the {a.name} is {rel} the {b.name}")
        relations_zh.append(f"{a.name_zh}在{b.name_zh}的{rel_zh}")
    long_en = (
        f"An image of {count_en} shapes on a {background} background. There is {things}. "
        + "; ".join(relations).capitalize()
        + "."
    )
    long_zh = (
        f"一张{BACKGROUNDS[background][1]}背景的图片，上面有{count_zh}个图形："
        + "，".join(f"{POSITIONS[s.position][1]}有一个{SIZES[s.size][0]}的{s.name_zh}" for s in shapes)
        + "。"
        + "；".join(relations_zh)
        + "。"
    )
    return {
        "caption": long_en,
        "short_caption": _join([_a(s.name) for s in shapes]),
        "caption_zh": long_zh,
        "short_caption_zh": _join([s.name_zh for s in shapes], zh=True),
    }


def hard_negatives(shape: Shape, others: list[Shape], count: int, rng: np.random.Generator) -> list[dict]:
    """``count`` rewrites of the shape's phrase, each changing exactly one attribute (every attribute kind used
    at least once when possible). Every rewrite is false of the shape — a position phrase that still describes it
    ("on the left" for an object in the top left) is never used — and none describes another object of the image."""
    pools: dict[str, list[dict]] = {
        "color": [{"color": c} for c in COLORS if c != shape.color],
        "shape": [{"shape": k} for k in SHAPES if k != shape.shape],
        "size": [{"size": s} for s in SIZES if s != shape.size],
        "position": [{"position": p} for p in POSITIONS if not position_describes(p, shape.position)],
    }
    taken = {o.phrase() for o in others}
    for kind in ATTRIBUTES:
        pools[kind] = [c for c in pools[kind] if shape.phrase(**c) not in taken]
        rng.shuffle(pools[kind])
    chosen = [pools[kind].pop() for kind in ATTRIBUTES if pools[kind]]
    rest = [c for kind in ATTRIBUTES for c in pools[kind]]
    rng.shuffle(rest)
    chosen = (chosen + rest)[:count]
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


# how often each level of detail of the second region caption is drawn: the bare name ("a red circle", the form
# of FineHARD's shortest region captions and of the box-classification prompts) three times as often as each
# other level, the other levels once (region captions then name a box without its size and place ~20 % of the time)
DETAIL_WEIGHTS = {"everything": 1, "relation": 1, "name": 3, "size": 1, "position": 1}
DETAIL_LEVELS = tuple(DETAIL_WEIGHTS)
_DETAIL_DRAW = tuple(level for level, weight in DETAIL_WEIGHTS.items() for _ in range(weight))


def region_description(s: Shape, nearest: Shape, level: str) -> tuple[str, str]:
    """The second region caption (``long_expr``) of a box, English and Chinese, at a level of detail: everything
    (its four attributes and its place next to its nearest neighbour), its relation to that neighbour, its name
    only, its name and size, or its name and position — as FineHARD's region captions range from a bare category
    to a long description."""
    rel, rel_zh = _relation(s, nearest)
    position, position_zh = POSITIONS[s.position]
    size_zh = SIZES[s.size][0]
    return {
        "everything": (
            f"{s.phrase()} of the image, {rel} the {nearest.name}",
            f"图片{s.phrase_zh()}，在{nearest.name_zh}的{rel_zh}",
        ),
        "relation": (f"the {s.name} {rel} the {nearest.name}", f"在{nearest.name_zh}{rel_zh}的{s.name_zh}"),
        "name": (_a(s.name), s.name_zh),
        "size": (f"a {s.size} {s.name}", f"{size_zh}{s.name_zh}"),
        "position": (f"{_a(s.name)} {position}", f"{position_zh}的{s.name_zh}"),
    }[level]


def records_for(index: int, shapes: list[Shape], background: str, f_path: str, negatives: int) -> dict[str, dict]:
    """The English and the Chinese FineHARD record of one scene."""
    rng = np.random.default_rng([index, 7])
    detail = np.random.default_rng([index, 11])  # its own stream: the hard negatives stay those of version 2
    text = captions(shapes, background)
    boxes_en, boxes_zh = [], []
    for k, s in enumerate(shapes):
        others = shapes[:k] + shapes[k + 1 :]
        changes = hard_negatives(s, others, negatives, rng)
        nearest = min(others, key=lambda o: math.dist(o.center, s.center))
        long_en, long_zh = region_description(s, nearest, _DETAIL_DRAW[int(detail.integers(len(_DETAIL_DRAW)))])
        bbox = [round(v, 6) for v in s.box] + [1.0]
        boxes_en.append(
            {
                "bbox": bbox,
                "short_expr": s.phrase(),
                "long_expr": long_en,
                "flag_short_neg": 1,
                "short_expr_negs": {f"n{j}": s.phrase(**c) for j, c in enumerate(changes)},
            }
        )
        boxes_zh.append(
            {
                "bbox": bbox,
                "short_expr": s.phrase_zh(),
                "long_expr": long_zh,
                "flag_short_neg": 1,
                "short_expr_negs": {f"n{j}": s.phrase_zh(**c) for j, c in enumerate(changes)},
            }
        )
    en = {"f_path": f_path, "caption": text["caption"], "short_caption": text["short_caption"], "bbox_info": boxes_en}
    zh = {
        "f_path": f_path,
        "caption": text["caption_zh"],
        "short_caption": text["short_caption_zh"],
        "bbox_info": boxes_zh,
        "is_cn": True,
    }
    return {"en": en, "zh": zh}


# ---------------------------------------------------------------------------------------------------- writing


def image_relpath(index: int) -> str:
    return f"coyo_image_0/{index // RECORDS_PER_FILE:05d}/fgs{index:08d}.jpg"


def _work(args: tuple[int, int, GenerateOptions, str]) -> list[dict[str, dict]]:
    start, stop, options, out = args
    results = []
    for index in range(start, stop):
        image, shapes, background = make_scene(index, options)
        rel = image_relpath(index)
        path = Path(out) / "grit-12m" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
        results.append(records_for(index, shapes, background, "grit-20m/data-12m/" + rel, options.negatives))
    return results


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _write_split(records: list[dict], folder: Path, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for part, start in enumerate(range(0, len(records), RECORDS_PER_FILE)):
        name = f"{stem}_{part:03d}.json"
        tmp = folder / (name + ".tmp")
        tmp.write_text(json.dumps(records[start : start + RECORDS_PER_FILE], ensure_ascii=False))
        os.replace(tmp, folder / name)
        names.append(str((folder / name).relative_to(folder.parent.parent)))
    return names


def generate(out: str | Path, options: GenerateOptions, force: bool = False, progress=None) -> dict:
    """Write FG-Shapes into ``out`` and return the manifest. A folder already generated with the same
    parameters is left as is (unless ``force``). Concurrent callers (e.g. every rank of a training job) are
    serialised by a lock file: one generates, the others then reuse its result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _generate_locked(out, options, force, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate_locked(out: Path, options: GenerateOptions, force: bool, progress) -> dict:
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("options") == options.key():
            manifest["reused"] = True
            return manifest
    out.mkdir(parents=True, exist_ok=True)
    chunk = 250
    jobs = [(a, b, options, str(out)) for a, b in _chunks(options.n, chunk)]
    results: list[dict[str, dict]] = []
    if options.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(options.workers) as pool:
            for part in pool.map(_work, jobs):
                results.extend(part)
                if progress:
                    progress(len(part))
    else:
        for job in jobs:
            part = _work(job)
            results.extend(part)
            if progress:
                progress(len(part))
    n_val = round(options.n * options.val_fraction)
    splits = {"train": results[: options.n - n_val], "val": results[options.n - n_val :]}
    files = {}
    for split, items in splits.items():
        if options.lang in ("en", "both"):
            files[split] = _write_split([r["en"] for r in items], out / "jsonfiles" / split, f"fgshapes_{split}")
        if options.lang in ("zh", "both"):
            files[f"{split}_cn"] = _write_split(
                [r["zh"] for r in items], out / "jsonfiles" / f"{split}_cn", f"fgshapes_{split}_cn"
            )
    manifest = {
        "generator": "fgshapes",
        "options": options.key(),
        "counts": {split: len(items) for split, items in splits.items()},
        "boxes": sum(len(r["en"]["bbox_info"]) for r in results),
        "image_root": "grit-12m",
        "jsonfiles": files,
        "vocabulary": {
            "colors": list(COLORS),
            "shapes": list(SHAPES),
            "sizes": list(SIZES),
            "positions": [p[0] for p in POSITIONS.values()],
        },
    }
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    os.replace(tmp, manifest_path)
    return manifest
