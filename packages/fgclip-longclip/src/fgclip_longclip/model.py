"""Long-CLIP fine-tuning: ``load_from_clip`` (77 -> 248 positions, the first 20 frozen) and the PCM objective."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPModel
from transformers.utils import ModelOutput

from fgclip_model.distributed import gather_with_grad
from fgclip_model.longclip import KEEP_POSITIONS, LONG_CONTEXT, clip_to_longclip, load_longclip_checkpoint
from fgclip_model.losses import normalize, pcm_losses, principal_reconstruction

FROZEN_ROWS_ATTR = "_longclip_frozen_rows"


def position_table(model: CLIPModel) -> nn.Parameter:
    return model.text_model.embeddings.position_embedding.weight


def freeze_position_rows(model: CLIPModel, keep: int = KEEP_POSITIONS) -> None:
    """Keep rows ``0..keep-1`` of the text position table exactly as they are during training.

    A gradient hook zeroes their gradient; with AdamW a zero gradient gives a zero update only without weight
    decay, so the optimiser must exempt the table from decay (:func:`no_decay_parameter_names` lists it). The
    reference froze a separate copy of the table instead; the effective table is the same.
    """
    weight = position_table(model)
    if getattr(weight, FROZEN_ROWS_ATTR, None) is not None:
        return

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:keep] = 0
        return grad

    weight.register_hook(hook)
    setattr(weight, FROZEN_ROWS_ATTR, keep)


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters whose frozen rows must not be decayed (the position table under :func:`freeze_position_rows`)."""
    return {n for n, p in model.named_parameters() if getattr(p, FROZEN_ROWS_ATTR, None) is not None}


def load_from_clip(
    name_or_path: str | os.PathLike, keep: int = KEEP_POSITIONS, length: int = LONG_CONTEXT
) -> CLIPModel:
    """A Long-CLIP model ready to fine-tune from a CLIP checkpoint: an HF ``CLIPModel`` folder (77 positions,
    stretched), a Long-CLIP ``.pt`` or an OpenAI state-dict ``.pt`` (``weights_only`` loading). fp32 throughout
    (the reference stretched in fp16). Rows ``0..keep-1`` of the position table are frozen."""
    path = Path(name_or_path)
    if path.is_dir():
        model = CLIPModel.from_pretrained(path, dtype=torch.float32)
        if model.config.text_config.max_position_embeddings != length:
            model = clip_to_longclip(model, length, keep)
    elif path.is_file():
        model = load_longclip_checkpoint(path, length, keep)
    else:
        raise FileNotFoundError(
            f"{name_or_path}: not a CLIP folder or .pt file (models are never downloaded at run time; fetch "
            "the checkpoint first)"
        )
    freeze_position_rows(model.float(), keep)
    return model.train()


@dataclass
class PCMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    loss_long: torch.Tensor | None = None
    loss_short: torch.Tensor | None = None


class LongCLIPForPCM(nn.Module):
    """The training wrapper: CLIP features of images, long and short captions -> the PCM losses
    (:meth:`compute_loss`), features gathered across ranks with ``gather``."""

    def __init__(self, clip: CLIPModel, pca_dim: int = 32, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.clip = clip
        self.config = clip.config
        self.pca_dim = pca_dim
        self.label_smoothing = label_smoothing

    def save_pretrained(self, path, state_dict: dict | None = None, **kwargs) -> None:
        """Save the wrapped ``CLIPModel`` as an HF folder (a ``clip.``-prefixed state dict is accepted)."""
        if state_dict is not None:
            state_dict = {k.removeprefix("clip."): v for k, v in state_dict.items()}
        self.clip.save_pretrained(path, state_dict=state_dict, **kwargs)

    def compute_loss(self, batch, weights=None, switches=None, *, gather=gather_with_grad) -> PCMOutput:
        """PCM losses of a stage-2 batch (``pixel_values``, ``text_long``, ``text_short``; the stage-2 contract of
        the FG-CLIP models): ``loss = loss_long + loss_short``. PCM has no weights and no local losses, so
        ``weights`` and ``switches`` are accepted and ignored."""
        image_embeds = normalize(self.clip.get_image_features(pixel_values=batch.pixel_values).pooler_output)
        long_embeds = normalize(self.clip.get_text_features(input_ids=batch.text_long).pooler_output)
        short_embeds = normalize(self.clip.get_text_features(input_ids=batch.text_short).pooler_output)
        coarse = principal_reconstruction(image_embeds, self.pca_dim)
        gathered = {}
        for name, local in (
            ("image", image_embeds),
            ("long", long_embeds),
            ("short", short_embeds),
            ("coarse", coarse),
        ):
            gathered[name], offset = gather(local)
        loss_long, loss_short = pcm_losses(
            image_embeds,
            long_embeds,
            short_embeds,
            coarse,
            gathered,
            self.clip.logit_scale.exp(),
            offset,
            self.label_smoothing,
        )
        return PCMOutput(loss_long + loss_short, loss_long, loss_short)
