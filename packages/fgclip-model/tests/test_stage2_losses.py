"""Stage-2 losses on edge cases the reference crashes on, against a plain loop-based computation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgclip_data import Stage2Batch
from fgclip_model.losses import contrastive_loss, hard_negative_loss, masked_contrastive_loss

BOS, EOS = 49406, 49407


def _texts(n: int, length: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(300, 40000, (n, length), generator=g)
    ids[:, 0] = BOS
    ids[:, -1] = EOS
    return ids


def _batch(box_nums, hard_nums, negatives=3, slots=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(box_nums)
    xy = torch.rand(b, slots, 2, generator=g) * 0.5
    wh = torch.rand(b, slots, 2, generator=g) * 0.5 + 0.05
    boxes = torch.cat([xy, xy + wh], -1)
    valid = torch.arange(slots)[None] < torch.tensor(box_nums)[:, None]
    box_infos = torch.where(valid[..., None], boxes, torch.zeros(()))  # zero-area padding like the reference
    hard_valid = torch.arange(slots)[None] < torch.tensor(hard_nums)[:, None]
    hard_infos = torch.where(hard_valid[..., None], boxes, torch.zeros(()))
    h = sum(hard_nums)
    return {
        "pixel_values": torch.randn(b, 3, 64, 64, generator=g),
        "text_short": _texts(b, 10, seed + 1),
        "text_long": _texts(b, 30, seed + 2),
        "box_infos": box_infos,
        "box_texts": _texts(b * slots, 8, seed + 3),
        "box_nums": torch.tensor(box_nums),
        "hard_infos": hard_infos,
        "hard_texts": _texts(h * (1 + negatives), 8, seed + 4).reshape(h, 1 + negatives, 8),
        "hard_nums": torch.tensor(hard_nums),
    }


def _loop_reference(model, batch):
    """Each term computed the obvious way: per image, per box, no masking tricks."""
    n = F.normalize
    v = n(model.get_image_features(batch["pixel_values"]), dim=-1)
    t_s = n(model.get_text_features(batch["text_short"], walk_type="short"), dim=-1)
    t_l = n(model.get_text_features(batch["text_long"], walk_type="long"), dim=-1)

    def clip(a, b):
        logits = model.logit_scale.exp() * a @ b.T
        target = torch.arange(len(a))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    dense = model.get_image_dense_features(batch["pixel_values"])
    slots = batch["box_infos"].shape[1]
    regions, texts, hard_regions = [], [], []
    for i in range(len(batch["pixel_values"])):
        for k in range(int(batch["box_nums"][i])):
            box = batch["box_infos"][i, k] * 4
            regions.append(model.get_image_box_roi_features(batch["pixel_values"][i : i + 1], [box[None]])[0])
            texts.append(model.get_text_features(batch["box_texts"][i * slots + k][None], walk_type="box")[0])
        for k in range(int(batch["hard_nums"][i])):
            box = batch["hard_infos"][i, k] * 4
            hard_regions.append(model.get_image_box_roi_features(batch["pixel_values"][i : i + 1], [box[None]])[0])
    assert dense is not None
    out = {"loss_long": clip(v, t_l), "loss_short": clip(v, t_s)}
    if len(regions) >= 2:
        r, u = n(torch.stack(regions), dim=-1), n(torch.stack(texts), dim=-1)
        logits = model.logit_scale_finegraind.exp() * r @ u.T
        target = torch.arange(len(r))
        out["loss_region"] = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    else:
        out["loss_region"] = torch.tensor(0.0)
    losses = []
    for g, r in enumerate(hard_regions):
        cands = n(model.get_text_features(batch["hard_texts"][g], walk_type="box"), dim=-1)
        logit = model.logit_scale_hardneg.exp() * n(r, dim=-1) @ cands.T
        losses.append(F.cross_entropy(logit[None], torch.tensor([0])))
    out["loss_hard"] = torch.stack(losses).mean() if losses else torch.tensor(0.0)
    return out


def test_terms_match_loop_reference_with_uneven_boxes(tiny_model):
    batch = _batch(box_nums=[4, 0, 1, 3], hard_nums=[2, 0, 1, 0])
    with torch.no_grad():
        got = tiny_model.compute_loss(Stage2Batch(**batch))
        want = _loop_reference(tiny_model, batch)
    for term in ("loss_long", "loss_short", "loss_region", "loss_hard"):
        torch.testing.assert_close(getattr(got, term), want[term], atol=1e-5, rtol=1e-5, msg=term)
    total = want["loss_long"] + want["loss_short"] + 0.1 * want["loss_region"] + 0.5 * want["loss_hard"]
    torch.testing.assert_close(got.loss, total, atol=1e-5, rtol=1e-5)


def test_one_valid_box_and_no_hard_boxes_do_not_crash(tiny_model):
    """Reference: squeeze() collapses one box to [D] and crashes; zero boxes give NaN; no hard box crashes cat."""
    tiny_model.train()
    for box_nums, hard_nums in (([1, 0], [0, 0]), ([0, 0], [0, 0]), ([0, 1], [0, 1])):
        batch = _batch(box_nums, hard_nums)
        out = tiny_model.compute_loss(Stage2Batch(**batch))
        assert torch.isfinite(out.loss)
        assert out.loss_region == 0
        tiny_model.zero_grad()
        out.loss.backward()
        for name, p in tiny_model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
    tiny_model.eval()


def test_gradients_finite_with_zero_area_padding_boxes(tiny_model):
    tiny_model.train()
    batch = _batch(box_nums=[2, 3], hard_nums=[1, 1])
    out = tiny_model.compute_loss(Stage2Batch(**batch))
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in tiny_model.parameters())
    assert tiny_model.logit_scale_finegraind.grad.abs() > 0 and tiny_model.logit_scale_hardneg.grad.abs() > 0
    tiny_model.zero_grad()
    tiny_model.eval()


def test_hard_negative_count_is_free_and_can_vary_per_box(tiny_model):
    batch = _batch(box_nums=[2, 2], hard_nums=[1, 1], negatives=1)  # one negative per box
    with torch.no_grad():
        torch.testing.assert_close(
            tiny_model.compute_loss(Stage2Batch(**batch)).loss_hard, _loop_reference(tiny_model, batch)["loss_hard"]
        )
    # box 0 has 3 negatives, box 1 only 1: padding candidates are masked
    batch = _batch(box_nums=[2, 2], hard_nums=[1, 1], negatives=3)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    with torch.no_grad():
        got = tiny_model.compute_loss(Stage2Batch(**batch, hard_text_mask=mask)).loss_hard
        losses = []
        for g, count in enumerate((4, 2)):
            region = tiny_model.get_image_box_roi_features(
                batch["pixel_values"][g : g + 1], [batch["hard_infos"][g, :1] * 4]
            )
            cands = F.normalize(tiny_model.get_text_features(batch["hard_texts"][g, :count], walk_type="box"), dim=-1)
            logits = tiny_model.logit_scale_hardneg.exp() * F.normalize(region, dim=-1) @ cands.T
            losses.append(F.cross_entropy(logits, torch.tensor([0])))
    torch.testing.assert_close(got, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_pure_loss_functions_on_crafted_embeddings():
    eye = torch.eye(3)
    # perfectly aligned pairs with a huge scale: loss ~ 0; swapped pairs: loss ~ scale
    assert contrastive_loss(eye, eye, eye, eye, torch.tensor(100.0)) < 1e-6
    swapped = eye[[1, 0, 2]]  # rows 0/1 exchanged: CE rows log(e+2), log(e+2), log(e+2) - 1
    want = torch.log(torch.tensor(torch.e + 2)) - 1 / 3
    torch.testing.assert_close(contrastive_loss(eye, swapped, eye, swapped, torch.tensor(1.0)), want)
    # the gathered columns and the offset select the right targets
    everyone, local = torch.eye(6), torch.eye(6)[3:]  # this rank holds rows 3..5 of the global batch
    scale = torch.tensor(100.0)
    assert contrastive_loss(local, local, everyone, everyone, scale, offset=3) < 1e-6
    assert contrastive_loss(local, local, everyone, everyone, scale, offset=0) > 50
    # masked contrastive: only valid slots take part
    valid = torch.tensor([True, False, True])
    region = torch.randn(3, 4)
    text = torch.randn(3, 4)
    keep = valid.nonzero()[:, 0]
    want = contrastive_loss(region[keep], text[keep], region[keep], text[keep], torch.tensor(2.0))
    torch.testing.assert_close(masked_contrastive_loss(region, text, valid, torch.tensor(2.0)), want)
    # hard negatives: uniform candidates -> log K
    cands = torch.zeros(2, 5, 4)
    torch.testing.assert_close(
        hard_negative_loss(torch.ones(2, 4), cands, torch.tensor(1.0)), torch.log(torch.tensor(5.0))
    )
    assert hard_negative_loss(torch.zeros(0, 4), torch.zeros(0, 5, 4), torch.tensor(1.0)) == 0


def test_stage2_batch_names_what_is_wrong():
    import pytest

    from fgclip_model.stage2 import ParsedBatch, Stage2Losses

    pixels, ids = torch.zeros(2, 3, 8, 8), torch.zeros(2, 5, dtype=torch.long)
    boxes = torch.zeros(2, 3, 4)

    def parse(losses=None, **parts):
        batch = Stage2Batch(**{"pixel_values": pixels, "text_short": ids, **parts})
        return ParsedBatch.parse(batch, losses or Stage2Losses())

    with pytest.raises(ValueError, match="needs pixel_values and text_short"):
        ParsedBatch.parse(Stage2Batch(text_short=ids), Stage2Losses())
    with pytest.raises(ValueError, match=r"text_short must be \[2, L\]"):
        parse(text_short=torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="the region loss needs box_infos, box_texts and box_nums"):
        parse(Stage2Losses(regions=True, hard=False))
    with pytest.raises(ValueError, match="box_texts has 5 rows for 2 x 3 box slots"):
        parse(box_infos=boxes, box_texts=torch.zeros(5, 5, dtype=torch.long), box_nums=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"box_infos must be \[2, S, 4\]"):
        parse(box_infos=torch.zeros(7, 4), box_texts=torch.zeros(6, 5, dtype=torch.long), box_nums=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="hard_texts were given without hard_infos"):
        parse(Stage2Losses(False), hard_texts=torch.zeros(1, 11, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot be split evenly over 3 hard boxes"):
        parse(
            Stage2Losses(regions=False), hard_infos=boxes, hard_texts=torch.zeros(10, 5, dtype=torch.long),
            hard_nums=torch.tensor([1, 2]),
        )  # fmt: skip
    # the default switches are what the batch provides
    assert Stage2Losses.of(Stage2Batch(pixel_values=pixels, text_short=ids, box_infos=boxes)) == Stage2Losses(
        regions=True, hard=False
    )
    parsed = parse(
        Stage2Losses(hard=False), box_infos=boxes, box_texts=torch.zeros(6, 5, dtype=torch.long),
        box_nums=torch.tensor([1, 3]),
    )  # fmt: skip
    assert parsed.box_valid.tolist() == [True, False, False, True, True, True] and not parsed.has_hard
