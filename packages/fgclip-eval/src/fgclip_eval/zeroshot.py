"""Zero-shot text classifiers, shared by the classification, box and segmentation tasks: the 80 OpenAI ImageNet
prompt templates, the ImageNet class names (``open_clip.zero_shot_metadata``, the OpenAI-curated lists the
reference scripts carry as copies), class-name cleaning, prompt ensembling, and the texts of candidate groups."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def templates() -> list[Callable[[str], str]]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES)


def imagenet_classnames() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def clean(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("/", " ").split())


@torch.no_grad()
def zero_shot_classifier(encoder, classnames: Sequence[str], prompts=None, walk: str = "short") -> torch.Tensor:
    """[C, D] class embeddings: the renormalised mean of each class's normalised prompt embeddings (``prompts``:
    template callables; None = the bare class name)."""
    prompts = prompts or [lambda c: c]
    texts = [p(c) for c in classnames for p in prompts]
    features = encoder.texts(texts, walk).reshape(len(classnames), len(prompts), -1)
    return torch.nn.functional.normalize(features.mean(dim=1), dim=-1)


def candidate_texts(encoder, groups: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-walk features [N, K, D] of candidate groups of different sizes, padded, and the [N, K] mask of real ones."""
    lengths = torch.tensor([len(g) for g in groups])
    width = int(lengths.max())
    mask = torch.arange(width)[None, :] < lengths[:, None]
    texts = encoder.texts([t for g in groups for t in g + [g[0]] * (width - len(g))], "box")
    return texts.reshape(len(groups), width, -1), mask
