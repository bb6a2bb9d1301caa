"""FG-CLIP 2 stage-2 losses against the reference trainer's FG_CLIP2_Model.forward (golden v2_loss_s1)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fgclip_data import Stage2Batch
from fgclip_model.fgclip2 import FGCLIP2Model

LOSS_TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}


@pytest.fixture(scope="module")
def case(golden):
    folder = golden / "v2_loss_s1"
    return (
        FGCLIP2Model.from_pretrained(folder / "model").eval(),
        load_file(folder / "io.safetensors"),
        json.loads((folder / "meta.json").read_text())["losses"],
    )


def _fields(io, long=True, boxes=False, hard=False) -> dict:
    batch = {
        "pixel_values": io["pixel_values"],
        "pixel_attention_mask": io["pixel_attention_mask"],
        "spatial_shapes": io["spatial_shapes"],
        "text_short": io["text_short"],
    }
    if long:
        batch["text_long"] = io["text_long"]
    if boxes:
        batch.update(box_infos=io["box_infos"], box_texts=io["box_texts"], box_nums=io["box_nums"])
    if hard:
        batch.update(hard_infos=io["hard_infos"], hard_texts=io["hard_texts"], hard_nums=io["hard_nums"])
    return batch


def _batch(io, **parts) -> Stage2Batch:
    return Stage2Batch(**_fields(io, **parts))


@torch.no_grad()
def test_each_loss_configuration(case):
    model, io, losses = case
    expect = lambda v: torch.tensor(v)  # noqa: E731
    torch.testing.assert_close(
        model.compute_loss(_batch(io, long=False)).loss, expect(losses["loss_short_only"]), **LOSS_TOL
    )
    torch.testing.assert_close(model.compute_loss(_batch(io)).loss, expect(losses["loss_global"]), **LOSS_TOL)
    out = model.compute_loss(_batch(io, boxes=True))
    torch.testing.assert_close(out.loss, expect(losses["loss_box"]), **LOSS_TOL)
    torch.testing.assert_close(
        out.loss_long + out.loss_short + 0.2 * out.loss_region + 0.1 * out.loss_tic, out.loss, atol=1e-6, rtol=0
    )
    full = model.compute_loss(_batch(io, boxes=True, hard=True), hard_margin=0.0)
    torch.testing.assert_close(full.loss, expect(losses["loss_full"]), **LOSS_TOL)
    torch.testing.assert_close(full.hard_margin, expect(losses["tau_after"]), **LOSS_TOL)
    inner = 0.6 * full.loss_hard_itc + 3.0 * full.loss_hard_pair + 0.4 * full.loss_hard_rank
    torch.testing.assert_close(inner, full.loss_hard, atol=1e-6, rtol=0)
    step2 = model.compute_loss(_batch(io, boxes=True, hard=True), hard_margin=full.hard_margin)
    torch.testing.assert_close(step2.loss, expect(losses["loss_full_step2"]), **LOSS_TOL)


def test_gradients(case):
    model, io, losses = case
    model.zero_grad()
    model.compute_loss(_batch(io, boxes=True, hard=True), hard_margin=losses["tau_after"]).loss.backward()
    params = dict(model.named_parameters())
    names = [k.removeprefix("grad.") for k in io if k.startswith("grad.")]
    assert len(names) == 6
    for name in names:
        torch.testing.assert_close(params[name].grad.reshape(io[f"grad.{name}"].shape), io[f"grad.{name}"], **GRAD_TOL)
    model.zero_grad()


def test_training_mode_keeps_the_running_margin(case):
    model, io, losses = case
    model.train()
    try:
        model.hard_margin.zero_()
        with torch.no_grad():
            first = model.compute_loss(_batch(io, boxes=True, hard=True))
            torch.testing.assert_close(model.hard_margin, torch.tensor(losses["tau_after"]), **LOSS_TOL)
            second = model.compute_loss(_batch(io, boxes=True, hard=True))
        torch.testing.assert_close(first.loss, torch.tensor(losses["loss_full"]), **LOSS_TOL)
        torch.testing.assert_close(second.loss, torch.tensor(losses["loss_full_step2"]), **LOSS_TOL)
        assert "hard_margin" not in model.state_dict()  # not part of the checkpoint layout
    finally:
        model.hard_margin.zero_()
        model.eval()


@torch.no_grad()
def test_grouped_hard_texts_equal_flat(case):
    model, io, _ = case
    flat = model.compute_loss(_batch(io, boxes=True, hard=True), hard_margin=0.0)
    grouped = _fields(io, boxes=True, hard=True)
    grouped["hard_texts"] = io["hard_texts"].reshape(5, 11, -1)
    torch.testing.assert_close(
        model.compute_loss(Stage2Batch(**grouped), hard_margin=0.0).loss, flat.loss, atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("name", ["v2_loss_s1", "v2_s0_dynamic", "v2_s1_fixed"])
def test_loaded_models_start_with_a_zero_margin(golden, name):
    """The rank-loss margin is a non-persistent buffer: loading must set it (it was uninitialised memory)."""
    for _ in range(3):
        model = FGCLIP2Model.from_pretrained(golden / name / "model")
        assert model.hard_margin.item() == 0.0


def test_repeated_texts_are_encoded_once_with_the_same_loss_and_gradients(case, monkeypatch):
    """A stage-2 batch repeats texts (a flagged box's positive is its box caption; negatives recur): each distinct
    row goes through the text tower once, and the loss and gradients are those of encoding every row."""
    import fgclip_model.fgclip2.modeling as modeling

    model, io, _ = case
    batch = _fields(io, boxes=True, hard=True)
    hard = batch["hard_texts"].clone()
    hard[1::11] = hard[0::11]  # the first negative of every hard box repeats its positive's ids
    batch["hard_texts"] = hard
    rows = []
    hook = model.text_model.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    try:
        results = {}
        for name, patch in (("all rows", True), ("distinct", False)):
            if patch:
                monkeypatch.setattr(modeling, "encode_unique", lambda encode, ids: encode(ids))
            else:
                monkeypatch.undo()
            model.zero_grad(set_to_none=True)
            loss = model.compute_loss(Stage2Batch(**batch), hard_margin=0.0).loss
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results[name] = (loss.detach(), grads)
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
        model.hard_margin.zero_()
    short_rows = len(batch["text_short"]) + len(batch["box_texts"]) + len(hard)
    distinct = torch.unique(torch.cat([batch["text_short"], batch["box_texts"], hard]), dim=0).shape[0]
    assert rows[0] == short_rows and distinct < short_rows and rows[2] == distinct  # [0], [2]: the short calls
    torch.testing.assert_close(results["distinct"][0], results["all rows"][0], atol=1e-6, rtol=0)
    for name, grad in results["all rows"][1].items():
        torch.testing.assert_close(results["distinct"][1][name], grad, **GRAD_TOL)  # summation order only
