"""Long-CLIP: PCM against a direct SVD, frozen rows stay bit-identical, loss falls, checkpoints reload."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from fgclip_data import Stage2Batch
from fgclip_longclip import LongCLIPForPCM, load_from_clip
from fgclip_longclip.model import no_decay_parameter_names
from fgclip_model.losses import principal_reconstruction


def test_principal_reconstruction_matches_a_direct_svd():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(64, 48, dtype=torch.float64), dim=-1)
    got = principal_reconstruction(x, k=8)
    mean = x.mean(0, keepdim=True)
    u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    want = (u[:, :8] * s[:8]) @ vh[:8] + mean  # truncated SVD written the other way round
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # rank-deficient batch (b <= k + 1): the features come back unchanged
    small = x[:9]
    torch.testing.assert_close(principal_reconstruction(small, k=32).double(), small, atol=1e-5, rtol=1e-5)


def _tiny_clip_folder(tmp_path) -> str:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    return tmp_path / "clip"


def _ids(n: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(300, 40000, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407
    return ids


def test_frozen_rows_stay_bit_identical_and_loss_falls(tmp_path):
    clip = load_from_clip(_tiny_clip_folder(tmp_path))
    assert clip.config.text_config.max_position_embeddings == 248
    model = LongCLIPForPCM(clip, pca_dim=4)
    table = clip.text_model.embeddings.position_embedding.weight
    before = table.detach().clone()
    decay_free = no_decay_parameter_names(model)
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay_free], "weight_decay": 0.0},
        {"params": [p for n, p in model.named_parameters() if n not in decay_free], "weight_decay": 0.01},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    batch = Stage2Batch(pixel_values=torch.randn(8, 3, 32, 32), text_long=_ids(8, 120, 1), text_short=_ids(8, 12, 2))
    losses = []
    for _ in range(15):
        out = model.compute_loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert torch.equal(table[:20], before[:20])  # bit-identical
    assert not torch.equal(table[20:120], before[20:120])  # the stretched rows did train
    assert losses[-1] < losses[0]
    torch.testing.assert_close(out.loss, out.loss_long + out.loss_short)


def test_checkpoints_reload_with_fgclip_model(tmp_path):
    import fgclip_model

    clip = load_from_clip(_tiny_clip_folder(tmp_path))
    clip.save_pretrained(tmp_path / "long")
    model, _ = fgclip_model.load(tmp_path / "long")
    assert model.config.text_config.max_position_embeddings == 248
    ids = _ids(1, 200, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(ids).pooler_output, clip.get_text_features(ids).pooler_output
        )


def test_load_from_a_longclip_pt_and_missing_paths(golden, tmp_path):
    shutil.copy(golden / "longclip_s0" / "longclip-tiny.pt", tmp_path / "longclip.pt")
    model = load_from_clip(tmp_path / "longclip.pt")
    assert model.text_model.embeddings.position_embedding.weight.shape[0] == 248
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_from_clip(tmp_path / "ViT-B-16")


def test_reference_bugs_stay_fixed(golden, tmp_path, clip_tokenizer):
    """Reference bugs of Long-CLIP: the stretch of an fp16 OpenAI table is computed in fp32; the sampler reshuffles
    every epoch; short captions are not padded to 248 tokens."""
    state = torch.load(golden / "longclip_s0" / "longclip-tiny.pt", weights_only=True)
    openai = {k: v.half() for k, v in state.items() if k != "positional_embedding_res"}
    openai["positional_embedding"] = state["positional_embedding"][:77].half()
    torch.save(openai, tmp_path / "openai.pt")
    table = load_from_clip(tmp_path / "openai.pt").text_model.embeddings.position_embedding.weight
    p = openai["positional_embedding"].float()
    assert table.dtype == torch.float32 and table.shape[0] == 248
    assert torch.equal(table[:20], p[:20])
    torch.testing.assert_close(table[22], (p[20] + p[21]) / 2, atol=0, rtol=0)

    from fgclip_train.data import ResumableBatchSampler

    sampler = ResumableBatchSampler(64, 8, 1, 0, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first

    from PIL import Image

    from fgclip_data import Sample
    from fgclip_longclip.family import build_collator

    collate = build_collator(None, clip_tokenizer, None, 32)
    sample = Sample(Image.new("RGB", (40, 30)), "a long caption " * 30, "a short one")
    batch = collate([sample, sample])
    assert batch.text_short.shape[1] < 20 and batch.text_long.shape[1] > 77
