"""fgclip-data batches drive fgclip-model's stage-2 losses (the contract between the two leaf packages)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from fgclip_data import FGCLIP2Collator, FGCLIPCollator, FineHARDDataset, ImageResize, SampleOptions
from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_model import FGCLIPModel
from fgclip_model.fgclip.processing import FGCLIPProcessor
from fgclip_model.fgclip2 import FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor


def test_fgshapes_batches_train_both_families(golden, tmp_path, clip_tokenizer, gemma_like_tokenizer):
    generate(tmp_path, GenerateOptions(n=16, seed=0, lang="both", workers=1))
    images = tmp_path / "grit-12m"

    v1 = FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").train()
    data = FineHARDDataset(tmp_path / "jsonfiles" / "train", images, resize=ImageResize(square=64))
    processor = FGCLIPProcessor.default_image_processor(64)
    loader = DataLoader(data, batch_size=4, collate_fn=FGCLIPCollator(clip_tokenizer, processor))
    batch = next(iter(loader))
    out = v1.compute_loss(batch)
    assert torch.isfinite(out.loss) and out.loss_region > 0 and out.loss_hard > 0
    out.loss.backward()
    assert v1.logit_scale_hardneg.grad is not None

    v2 = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model").train()
    data = FineHARDDataset(tmp_path / "jsonfiles" / "train_cn", images, options=SampleOptions(negatives=10))
    collate = FGCLIP2Collator(gemma_like_tokenizer, FGCLIP2ImageProcessor(), max_num_patches=64)
    batch = next(iter(DataLoader(data, batch_size=4, collate_fn=collate)))
    assert batch.pixel_values.shape == (4, 64, 768)
    out = v2.compute_loss(batch)
    for term in ("loss", "loss_region", "loss_tic", "loss_hard"):
        assert torch.isfinite(getattr(out, term)), term
    out.loss.backward()
    assert v2.logit_scale_finegraind.grad is not None
