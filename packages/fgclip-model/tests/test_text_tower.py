"""Text walks: any length up to the walk's maximum, clear errors beyond, batch == one-by-one."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fgclip_model import FGCLIPModel

BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def golden_model(golden):
    return FGCLIPModel.from_pretrained(golden / "v1_s0" / "model").eval()


def _ids(length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(300, 40000, (length - 2,), generator=g)
    return torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])])


@torch.no_grad()
def test_long_text_of_any_length_matches_the_248_padded_reference(golden, golden_model):
    """The reference only accepts exactly 248 tokens; unpadded long text must give the padded numbers."""
    io = load_file(golden / "v1_s0" / "io.safetensors")
    for row in range(3):
        padded = io["input_ids_long"][row]
        length = int((padded == EOS).int().argmax()) + 1
        unpadded = padded[:length][None]
        torch.testing.assert_close(
            golden_model.get_text_features(unpadded, walk_type="long")[0],
            io["text_embeds_long"][row],
            atol=2e-5,
            rtol=1e-4,
        )


@torch.no_grad()
def test_long_walk_reads_ori_below_keep_and_res_above(golden_model):
    emb = golden_model.text_model.embeddings
    table = emb.position_table("long", 248)
    torch.testing.assert_close(table[:20], emb.position_embedding_ori.weight[:20], atol=0, rtol=0)
    torch.testing.assert_close(table[20:], emb.position_embedding_res.weight[20:], atol=0, rtol=0)
    # the dead rows have no influence
    ids = _ids(100, 1)[None]
    before = golden_model.get_text_features(ids, walk_type="long")
    saved = emb.position_embedding_ori.weight[20:].clone(), emb.position_embedding_res.weight[:20].clone()
    emb.position_embedding_ori.weight[20:] = 1e3
    emb.position_embedding_res.weight[:20] = -1e3
    try:
        torch.testing.assert_close(golden_model.get_text_features(ids, walk_type="long"), before, atol=0, rtol=0)
    finally:
        emb.position_embedding_ori.weight[20:], emb.position_embedding_res.weight[:20] = saved


@pytest.mark.parametrize(("walk", "limit"), [("short", 77), ("box", 77), ("long", 248)])
def test_too_long_text_is_a_clear_error(golden_model, walk, limit):
    golden_model.get_text_features(_ids(limit, 0)[None], walk_type=walk)  # the maximum works
    with pytest.raises(ValueError, match=f"{limit + 1} tokens but the {walk} walk has {limit} positions"):
        golden_model.get_text_features(_ids(limit + 1, 0)[None], walk_type=walk)


def test_walk_keywords():
    from fgclip_model.fgclip.modeling import resolve_walk_type

    assert resolve_walk_type(None) == "short"
    assert resolve_walk_type(None, walk_short_pos=False) == "long"
    assert resolve_walk_type(None, walk_short_pos=True, use_bbox=True) == "box"
    assert resolve_walk_type("long", walk_short_pos=True) == "long"
    with pytest.raises(ValueError, match="mixes short positions"):
        resolve_walk_type(None, walk_short_pos=False, use_bbox=True)
    with pytest.raises(ValueError, match="walk_type must be one of"):
        resolve_walk_type("medium")


@pytest.mark.parametrize("walk", ["short", "long"])
@torch.no_grad()
def test_batch_equals_one_by_one_for_mixed_lengths(golden_model, walk):
    lengths = [5, 40, 77] if walk == "short" else [7, 120, 248]
    singles = [_ids(n, i) for i, n in enumerate(lengths)]
    width = max(lengths)
    batch = torch.full((len(singles), width), EOS)
    mask = torch.zeros(len(singles), width, dtype=torch.long)
    for i, s in enumerate(singles):
        batch[i, : len(s)] = s
        mask[i, : len(s)] = 1
    one_by_one = torch.cat([golden_model.get_text_features(s[None], walk_type=walk) for s in singles])
    torch.testing.assert_close(
        golden_model.get_text_features(batch, mask, walk_type=walk), one_by_one, atol=1e-5, rtol=1e-4
    )
    # without a mask too: right padding after EOS never reaches the pooled token under the causal mask
    torch.testing.assert_close(golden_model.get_text_features(batch, walk_type=walk), one_by_one, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_left_padded_rows_stay_finite(golden_model):
    """Query rows of left padding see no unmasked key under causal + padding masks; they must not become NaN."""
    ids = _ids(12, 3)
    padded = torch.cat([torch.full((4,), EOS), ids])[None]
    mask = torch.cat([torch.zeros(4, dtype=torch.long), torch.ones(12, dtype=torch.long)])[None]
    hidden, _ = golden_model.text_model(padded, mask, "short")
    assert torch.isfinite(hidden).all()


def test_text_gradient_reaches_only_the_walk_tables(golden_model):
    model = golden_model.train()
    try:
        model.zero_grad()
        model.get_text_features(_ids(60, 2)[None], walk_type="long").sum().backward()
        emb = model.text_model.embeddings
        assert emb.position_embedding.weight.grad is None or not emb.position_embedding.weight.grad.any()
        assert emb.position_embedding_ori.weight.grad[:20].abs().sum() > 0
        assert not emb.position_embedding_ori.weight.grad[20:].any()
        assert emb.position_embedding_res.weight.grad[20:60].abs().sum() > 0
        assert not emb.position_embedding_res.weight.grad[:20].any()
        assert model.text_projection.weight.grad is None or not model.text_projection.weight.grad.any()
    finally:
        model.zero_grad()
        model.eval()
