"""Stage-2 training on the CPU: both families learn, checkpoints load with fgclip_model, bad data and
non-finite losses are handled as documented."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import fgclip_model
from fgclip_data.images import BOMB
from fgclip_train.config import load_config
from fgclip_train.loop import NonFiniteLoss, train


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _run(overrides: list[str]):
    # the one-process group stays up between runs (DeepSpeed caches its groups); see conftest
    return train(load_config(overrides=overrides))


def test_fgclip2_trains_and_its_checkpoint_loads(tiny_overrides, tmp_path):
    results = _run(
        [
            *tiny_overrides,
            "--schedule.max_steps=12",
            "--optim.lr=3e-3",
            "--runtime.save_every=4",
            "--runtime.save_total_limit=2",
            "--runtime.eval_every=6",
        ]
    )
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    from fgclip_train.plots import read_metrics

    _, evals = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(e["step"], e["eval"]) for e in evals] == [(0, "before"), (6, "during"), (12, "after")]
    with Image.open(tmp_path / "run" / "training_curves.png") as plot:  # losses and validation metrics per step
        assert plot.size[0] > 400 and plot.size[1] > 400
    assert set(results["before"]) >= {"i2t_r1_short", "t2i_r1_long", "hard_negative_acc", "box_cls_acc"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())  # with the CPU the run measured on
    assert saved["machine"]["threads"] >= 1 and saved["machine"]["effective_class"] in (
        "avx2",
        "avx512",
        "avx512_bf16",
        "amx",
        "baseline",
    )
    wins = {k: results["after"][f"hard_win_{k}"] for k in ("color", "shape", "size", "position")}
    assert all(0 <= v <= 1 for v in wins.values())
    # a box is right only when it beats all its rewrites: no better than its weakest attribute
    assert results["after"]["hard_negative_acc"] <= min(wins.values()) + 1e-6
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert kept == ["checkpoint-0000008", "checkpoint-0000012"]  # save_total_limit
    model, processor = fgclip_model.load(tmp_path / "run" / "checkpoint-0000012" / "model")
    assert type(model).__name__ == "FGCLIP2Model" and processor.tokenizer is not None
    # trained on the word tokenizer's left padding: text given with a mask is read in that layout
    assert model.config.text_config.padding_side == "left" == processor.tokenizer.padding_side
    text = processor(text=["a small red circle on the left"])
    ids = text["input_ids"]
    assert ids.shape == (1, 24) and ids[0, 0] != 0 and 1 in ids[0]  # the model's short walk, EOS included
    assert 3 not in ids.tolist()[0]  # every word of FG-Shapes is in the vocabulary (3 = unk)
    trained_layout = processor.tokenizer(
        ["a small red circle on the left"], padding="max_length", max_length=24, return_tensors="pt"
    )  # as the collator gave it: EOS last
    assert trained_layout["input_ids"][0, -1] == 1
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(**text), model.get_text_features(**trained_layout))


def test_fgclip_v1_trains(tiny_overrides, tmp_path):
    v1_size = [
        "--model.family=fgclip",
        "--model.size={text_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
        "num_attention_heads: 2}, vision_config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
        "num_attention_heads: 2, image_size: 64, patch_size: 16}, projection_dim: 32}",
    ]
    results = _run(
        [*tiny_overrides, *v1_size, "--schedule.max_steps=12", "--optim.lr=3e-3", "--runtime.eval_before=false"]
    )
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert results["after"]["hard_negative_acc"] >= 0
    model, processor = fgclip_model.load(tmp_path / "run" / "checkpoint-0000012" / "model")
    assert type(model).__name__ == "FGCLIPModel"
    batch = processor(text=["a large blue star"], walk_type="box")
    assert batch["input_ids"][0, 0] == 49406 and batch["input_ids"][0, -1] == 49407


def test_non_finite_loss_names_step_and_term(tiny_overrides, monkeypatch):
    from fgclip_model.fgclip2 import FGCLIP2Model

    original = FGCLIP2Model.compute_loss

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out.loss_region = out.loss_region * float("nan")
        out.loss = out.loss + out.loss_region
        return out

    monkeypatch.setattr(FGCLIP2Model, "compute_loss", poisoned)
    base = [*tiny_overrides, "--schedule.max_steps=2", "--runtime.eval_before=false", "--runtime.eval_after=false"]
    with pytest.raises(NonFiniteLoss, match=r"step 1: non-finite loss term\(s\) loss, loss_region"):
        _run(base)
    results = _run([*base, "--loss.on_nonfinite=skip", "--runtime.resume=false", "--runtime.overwrite=true"])
    assert results["steps"] == 2 and results["skipped"] == {"non-finite loss (step skipped)": 2}


def test_bad_samples_are_counted_not_fatal(tiny_overrides, fgshapes_cache, tmp_path, bomb_png):
    _run([*tiny_overrides, "--schedule.max_steps=1", "--runtime.eval_before=false", "--runtime.eval_after=false"])
    images = next(fgshapes_cache.glob("fgshapes-n120-*")) / "grit-12m" / "coyo_image_0" / "00000"
    broken = sorted(images.glob("*.jpg"))[:20]
    saved = [(p, p.read_bytes()) for p in broken]
    try:
        for p in broken[:10]:
            p.unlink()
        for p in broken[10:15]:
            p.write_bytes(b"broken")
        for p in broken[15:]:  # decompression bombs: a header declaring 9e8 pixels
            p.write_bytes(bomb_png)
        results = _run(
            [
                *tiny_overrides,
                "--schedule.max_steps=6",
                f"--runtime.output_dir={tmp_path / 'bad'}",
                "--runtime.eval_before=false",
                "--runtime.eval_after=false",
            ]
        )
    finally:
        for p, data in saved:
            p.write_bytes(data)
    assert results["steps"] == 6
    kinds = set(results["skipped"])
    assert kinds == {"missing image", "corrupt image (UnidentifiedImageError)", BOMB}, kinds
    rows = [json.loads(line) for line in (tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped"] == sum(results["skipped"].values())
    assert torch.isfinite(torch.tensor(rows[-1]["loss"]))


def test_bilingual_batches_are_monolingual(tiny_overrides, tmp_path):
    from fgclip_train.data import ResumableBatchSampler

    sampler = ResumableBatchSampler(20, 2, 2, 1, seed=0, groups=[range(12), range(12, 20)])
    assert len(sampler) == 5
    for batch in sampler.global_batches():
        assert all(i < 12 for i in batch) or all(i >= 12 for i in batch)
    seen = [i for b in sampler.global_batches() for i in b]
    assert len(seen) == len(set(seen)) == 20
    sampler.set_epoch(0, start_batch=3)
    assert list(sampler) == [b[2:4] for b in sampler.global_batches()[3:]]

    results = _run(
        [*tiny_overrides, "--data.fgshapes_lang=both", "--schedule.max_steps=4", "--runtime.eval_before=false"]
    )
    assert results["steps"] == 4 and results["after"]["box_cls_acc"] >= 0


def test_bf16_and_gradient_checkpointing_on_cpu(tiny_overrides, tmp_path):
    """DeepSpeed's bf16 mode (fp32 master weights) and non-reentrant activation checkpointing run on the CPU;
    the exported checkpoint stays fp32."""
    results = _run(
        [
            *tiny_overrides,
            "--runtime.precision=bf16",
            "--runtime.zero_stage=2",  # bf16 mode's fp32 master weights live in ZeRO's partitions
            "--model.gradient_checkpointing=true",
            "--schedule.max_steps=3",
            "--runtime.eval_before=false",
            "--runtime.eval_after=false",
        ]
    )
    assert results["steps"] == 3
    losses = _losses(tmp_path / "run")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    model, _ = fgclip_model.load(tmp_path / "run" / "checkpoint-0000003" / "model")
    assert next(model.parameters()).dtype == torch.float32
    weight = model.text_model.encoder.layers[0].mlp.fc1.weight
    assert not torch.equal(weight, weight.bfloat16().float())  # the fp32 master weights, not the bf16 copies


@pytest.mark.filterwarnings("error::FutureWarning")
def test_gradient_checkpointing_switch_turns_it_on_without_deprecated_calls():
    from fgclip_data.tokenizer import build_word_tokenizer
    from fgclip_train.families import get_family

    tokenizer = build_word_tokenizer(["a red square", "a blue circle"], "fgclip2")
    for on in (False, True):
        config = load_config(overrides=[f"--model.gradient_checkpointing={str(on).lower()}"])
        model = get_family(config.model.family).build_model(config, tokenizer)
        layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
        assert layers and all(m.gradient_checkpointing is on for m in layers)


def test_validation_encodes_each_distinct_text_once(gemma_like_tokenizer):
    """The validator's text features: repeated texts (the hard-negative rewrites) are encoded once and gathered
    back, the same features and order as encoding every row."""
    import torch.nn.functional as F

    from fgclip_data import FGCLIP2Collator
    from fgclip_model.fgclip2.modeling import FGCLIP2Model
    from fgclip_model.tiny import fgclip2_config
    from fgclip_train.validation import Validator

    torch.manual_seed(0)
    model = FGCLIP2Model(fgclip2_config(vocab_size=64, short_length=16)).eval()
    validator = Validator.__new__(Validator)
    validator.collator = FGCLIP2Collator(gemma_like_tokenizer, None)
    texts = ["a red square", "a blue circle left", "a red square", "the green triangle", "a blue circle left"]
    encoded = []
    real = model.get_text_features
    model.get_text_features = lambda ids, **kw: encoded.append(len(ids)) or real(ids, **kw)
    with torch.no_grad():
        got = validator._texts(model, texts, "box", 16, "cpu")
        each = F.normalize(real(validator.collator.tokenize(texts, 16), walk_type="box"), dim=-1)
    assert encoded == [3]
    torch.testing.assert_close(got, each, rtol=0, atol=1e-6)
    assert validator._texts(model, [], "box", 16, "cpu").shape[0] == 0


def test_validation_prepares_pixels_once_and_matches_two_pass_features(tiny_overrides, monkeypatch):
    """The validator keeps its collated pixels between calls when they fit (the same metrics as preparing them
    each time), and its one-pass global + region features equal the two feature calls."""
    from fgclip_train import validation
    from fgclip_train.engine import setup_distributed
    from fgclip_train.loop import build_run, preflight, start_output

    config, (sources, records, val_records) = preflight(load_config(overrides=tiny_overrides))
    env = setup_distributed()
    run = build_run(config, sources, records, val_records, env, start_output(config, env))
    model, validator = run.engine.module, run.validator
    prepared = []
    images = validator.collator.images
    monkeypatch.setattr(validator.collator, "images", lambda ims: prepared.append(len(ims)) or images(ims))
    first, second = validator(model), validator(model)
    assert sum(prepared) == len(validator.samples) > 0  # the second call reused the first's pixels
    assert first == second
    monkeypatch.setattr(validation, "PIXEL_CACHE_BYTES", 0)
    uncached = validation.build_validator(
        config, val_records, sources, run.tokenizer, validator.collator, run.data.resize
    )
    prepared.clear()
    assert uncached(model) == first and uncached(model) == first
    assert sum(prepared) == 2 * len(uncached.samples)  # nothing kept: prepared at each call
    chunk, batch = next(iter(validator._batches()))
    with torch.no_grad():
        image, regions = validator._images(model, chunk, batch, "cpu")
        inputs = validation.image_inputs(batch, "cpu")
        boxes = [torch.tensor(s.boxes).reshape(-1, 4) for s in chunk]
        two_pass = torch.nn.functional.normalize(model.get_image_features(**inputs), dim=-1)
        two_pass_regions = model.get_image_region_features(**inputs, boxes=boxes)
    torch.testing.assert_close(image, two_pass, atol=1e-6, rtol=1e-5)
    for got, want in zip(regions, two_pass_regions, strict=True):
        torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1), atol=1e-6, rtol=1e-5)


def test_validation_classifies_boxes_of_any_data_by_its_region_captions():
    """Outside FG-Shapes (e.g. an imported COCO-style split, whose short region captions are category names) a box's
    class is its short region caption among the split's distinct ones; FG-Shapes keeps its 40 colour-shape classes."""
    from fgclip_data.finehard.samples import Sample
    from fgclip_train.validation import Validator

    validator = Validator.__new__(Validator)
    validator.classes = None
    image = None
    validator.samples = [
        Sample(image, "c", "s", boxes=[(0, 0, 1, 1)] * 2, box_captions=["cup", "apple"]),
        Sample(image, "c", "s", boxes=[(0, 0, 1, 1)], box_captions=["cup"]),
    ]
    boxes = [(0, 0), (0, 1), (1, 0)]
    names, truth = validator._box_classes(boxes)
    assert names == ["apple", "cup"] and truth.tolist() == [1, 0, 1]
    validator.classes = ["red circle", "blue square"]
    validator.samples = [
        Sample(
            image, "c", "s", boxes=[(0, 0, 1, 1)] * 2, box_captions=["a small blue square left", "a big red circle top"]
        )
    ]
    names, truth = validator._box_classes([(0, 0), (0, 1)])
    assert names == ["a red circle", "a blue square"] and truth.tolist() == [1, 0]
