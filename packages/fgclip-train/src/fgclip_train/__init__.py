"""fgclip-train: stage-2 (and Long-CLIP) training of the fine-grained CLIP family on DeepSpeed.

The public pieces: :class:`TrainConfig` / :func:`load_config` (the validated configuration), :func:`train` (the
loop), and :class:`TrainingFamily` / :func:`register_family` (how another package trains its model, with its presets, on
the same loop).
"""

from fgclip_train.__about__ import __version__
from fgclip_train.config import TrainConfig, load_config
from fgclip_train.families import TrainingFamily, get_family, register_family

__all__ = ["TrainConfig", "TrainingFamily", "__version__", "get_family", "load_config", "register_family", "train"]


def __getattr__(name: str):
    if name == "train":  # the loop imports DeepSpeed: only when asked for
        from fgclip_train.loop import train

        return train
    raise AttributeError(f"module 'fgclip_train' has no attribute {name!r}")
