"""Published numbers of the official checkpoints, shown next to measured ones (as fractions, like the results).

Sources are the projects' own claims: FG-CLIP 2's README radar chart (one value per benchmark; the model size is
not stated there — the largest, so400m, is the likely one) and Long-CLIP's ``model_zoo.md``. Long-CLIP's
"Flickr30k" figures are on the full 31k-image set, so they sit under ``flickr30k-full`` (Long-CLIP's protocol),
not under the 1k test split of ``flickr30k``.
"""

from __future__ import annotations

import json
from pathlib import Path

PAPER: dict[str, dict[str, dict[str, float]]] = {
    "fg-clip2-so400m": {
        "coco": {"i2t_r1": 0.751, "t2i_r1": 0.586},
        "flickr30k": {"i2t_r1": 0.966, "t2i_r1": 0.848},
        "dci": {"i2t_r1": 0.700, "t2i_r1": 0.716},
        "sharegpt4v-1k": {"i2t_r1": 0.969, "t2i_r1": 0.966},
        "imagenet-1k": {"top1": 0.831},
        "imagenet-v2": {"top1": 0.774},
        "coco-box": {"top1": 0.740},
        "fgovd-medium": {"accuracy": 0.775},
        "fgovd-hard": {"accuracy": 0.555},
        "lit-cn": {"i2t_r1": 0.863, "t2i_r1": 0.859},
        "docci-cn": {"i2t_r1": 0.776, "t2i_r1": 0.819},
        "flickr30k-cna": {"i2t_r1": 0.903, "t2i_r1": 0.750},
        "coco-cn": {"i2t_r1": 0.828, "t2i_r1": 0.665},
        "boxclass-cn": {"top1": 0.686},
    },
    "longclip-b": {
        "coco": {"i2t_r1": 0.572, "t2i_r1": 0.404},
        "flickr30k-full": {"i2t_r1": 0.472, "t2i_r1": 0.331},
    },
    "longclip-l": {
        "coco": {"i2t_r1": 0.583, "t2i_r1": 0.451},
        "flickr30k-full": {"i2t_r1": 0.488, "t2i_r1": 0.394},
    },
}

# names the official checkpoints go by (hub ids, folder names, .pt files), lower-cased -> PAPER key
ALIASES = {
    "qihoo360/fg-clip2-so400m": "fg-clip2-so400m",
    "fg-clip2-so400m": "fg-clip2-so400m",
    "beichenzhang/longclip-b": "longclip-b",
    "longclip-b": "longclip-b",
    "beichenzhang/longclip-l": "longclip-l",
    "longclip-l": "longclip-l",
}


def paper_key(model: str | Path, explicit: str | None = None) -> str | None:
    """The PAPER row of a checkpoint: ``explicit`` (``--paper``) if given, else its ``_name_or_path`` or folder name
    when it names an official checkpoint."""
    if explicit:
        if explicit not in PAPER:
            raise ValueError(f"no published numbers for {explicit!r} (known: {', '.join(PAPER)})")
        return explicit
    names = [str(model), Path(model).name]
    config = Path(model) / "config.json"
    if config.is_file():
        names.insert(0, json.loads(config.read_text()).get("_name_or_path", ""))
    for name in names:
        name = name.lower().removesuffix(".pt")
        if name in ALIASES:
            return ALIASES[name]
    return None
