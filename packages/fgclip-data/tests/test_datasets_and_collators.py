"""Datasets and collators on FineHARD-layout files: batch layout, bad images, sharding by rank and worker."""

from __future__ import annotations

import json

import torch
from torch.utils.data import DataLoader
from transformers import CLIPImageProcessor
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

from fgclip_data import (
    FGCLIP2Collator,
    FGCLIPCollator,
    FineHARDDataset,
    FineHARDStream,
    ImageResize,
    Sample,
    SampleOptions,
    Skipped,
    Stage2Batch,
)


def test_v1_batch_layout(finehard, clip_tokenizer):
    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], resize=ImageResize(square=32))
    assert len(data) == 8 and isinstance(data[0], Sample) and data[0].image.size == (32, 32)
    collate = FGCLIPCollator(clip_tokenizer, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), max_boxes=3)
    batch = collate([data[i] for i in range(4)])
    assert batch.pixel_values.shape == (4, 3, 32, 32)
    assert batch.text_short.shape[0] == 4 and batch.text_short.shape[1] <= 77
    assert batch.box_infos.shape == (4, 3, 4) and batch.box_texts.shape[0] == 12
    assert batch.box_nums.tolist() == [2, 2, 2, 2]
    torch.testing.assert_close(batch.box_infos[0, 0], torch.tensor([0.1, 0.1, 0.5, 0.5]))
    assert (batch.box_infos[:, 2] == 0).all()  # empty slot
    assert batch.hard_nums.tolist() == [1, 1, 1, 1]
    assert batch.hard_texts.shape[:2] == (4, 11) and batch.hard_text_mask.all()
    first_hard = clip_tokenizer.decode(batch.hard_texts[0, 0], skip_special_tokens=True)
    assert first_hard.replace(" ", "") == "aredball"  # positive first, lower-cased
    assert batch.skipped == {} and batch.box_infos is not None and batch.hard_texts is not None
    assert isinstance(batch, Stage2Batch) and batch.image_inputs().keys() == {"pixel_values"}


def test_v2_batch_layout_and_uneven_negatives(finehard, gemma_like_tokenizer, make, tmp_path):
    recs = [make.record("k0"), make.record("k1")]
    recs[1]["bbox_info"][0]["short_expr_negs"] = make.negs("a green ball", 4)
    file = tmp_path / "two.json"
    file.write_text(json.dumps(recs))
    data = FineHARDDataset(file, finehard["images"], options=SampleOptions(negatives=None))
    collate = FGCLIP2Collator(gemma_like_tokenizer, Siglip2ImageProcessorPil(), max_num_patches=16)
    batch = collate([data[0], data[1]])
    assert batch.pixel_values.shape == (2, 16, 768) and batch.spatial_shapes.shape == (2, 2)
    assert batch.text_short.shape == (2, 64) and batch.text_long.shape == (2, 196)  # padded to max length
    assert batch.hard_texts.shape == (2, 11, 64)
    assert batch.hard_text_mask.sum(1).tolist() == [11, 5]


def test_v2_patch_budget_drawn_per_training_batch(finehard, gemma_like_tokenizer):
    """``min_num_patches``: each training batch gets a budget in [min, max], the same one every time the same
    batch comes back (resume), while ``images`` (validation, inference) stays at ``max_num_patches``."""
    import pytest

    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], options=SampleOptions(negatives=None))
    processor = Siglip2ImageProcessorPil()
    fixed = FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64)
    varied = FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64, min_num_patches=4)
    batches = [[data[i], data[(i + 1) % len(data)]] for i in range(len(data))]
    budgets = [varied(b).pixel_values.shape[1] for b in batches]
    assert all(4 <= n <= 64 for n in budgets) and len(set(budgets)) > 1  # drawn, not fixed
    assert budgets == [varied(b).pixel_values.shape[1] for b in batches]  # the same batch, the same budget
    assert {fixed(b).pixel_values.shape[1] for b in batches} == {64}
    one = varied(batches[0])
    assert one.pixel_attention_mask.sum(1).max() <= one.pixel_values.shape[1]
    images = [s.image for s in batches[0]]
    assert varied.images(images)["pixel_values"].shape[1] == 64  # validation: the full budget
    other_seed = FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64, min_num_patches=4, seed=7)
    assert [other_seed(b).pixel_values.shape[1] for b in batches] != budgets
    with pytest.raises(ValueError, match="min_num_patches 65 needs a fixed max_num_patches"):
        FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64, min_num_patches=65)


def test_bad_images_are_skipped_and_counted(finehard, clip_tokenizer):
    (finehard["images"] / "coyo_image_0/00000/k1.jpg").unlink()
    (finehard["images"] / "coyo_image_0/00000/k2.jpg").write_bytes(b"not a jpeg")
    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], resize=ImageResize(square=32))
    items = [data[i] for i in range(4)]
    assert [type(x).__name__ for x in items] == ["Sample", "Skipped", "Skipped", "Sample"]
    collate = FGCLIPCollator(clip_tokenizer, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32))
    batch = collate(items)
    assert batch.pixel_values.shape[0] == 2
    assert batch.skipped == {"missing image": 1, "corrupt image (UnidentifiedImageError)": 1}  # by kind
    assert (
        data.report.counts["missing image"] == 1 and data.report.counts["corrupt image (UnidentifiedImageError)"] == 1
    )
    empty = collate([items[1]])
    assert empty.empty and empty == Stage2Batch(skipped={"missing image": 1})


def test_region_caption_choice_is_seeded_per_epoch(finehard):
    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], seed=1)
    first = [data[i].box_captions for i in range(8)]
    assert first == [data[i].box_captions for i in range(8)]  # deterministic
    seen = {tuple(c) for c in first}
    data.set_epoch(1)
    seen |= {tuple(data[i].box_captions) for i in range(8)}
    assert len(seen) > 1  # short and long expressions both drawn


def test_stream_shards_every_record_exactly_once(finehard):
    seen = []
    for rank in range(2):
        stream = FineHARDStream(finehard["jsonfiles"], finehard["images"], rank=rank, world_size=2)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        seen += [s.source for s in loader if isinstance(s, Sample)]
    assert len(seen) == 8 and len(set(seen)) == 8


def test_stream_skips_bad_records(finehard, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"f_path": "x.jpg"}\n' + json.dumps({"f_path": "../../x.jpg", "caption": "c", "short_caption": "s"}) + "\n"
    )
    stream = FineHARDStream(bad, finehard["images"], rank=0, world_size=1)
    items = list(stream)
    assert len(items) == 1 and isinstance(items[0], Skipped)
    assert stream.report.skipped == 2


def test_tokenize_each_distinct_text_once_gives_the_tokenizers_ids(clip_tokenizer, gemma_like_tokenizer, monkeypatch):
    """Repeated texts are tokenized once per batch (v1, padded to the longest) and, with FG-CLIP 2's fixed-length
    padding, kept across batches; the ids are exactly the tokenizer's either way, also once the cache is full."""
    import fgclip_data.collate as collate_module

    texts = ["a red square", "a cat", "a red square", "two big blue circles left of a dog", "a cat", ""]
    later = ["a cat", "the green triangle", "a red square", "a cat"]
    cases = (
        (FGCLIPCollator(clip_tokenizer, None), clip_tokenizer, True, 77),
        (FGCLIP2Collator(gemma_like_tokenizer, None), gemma_like_tokenizer, "max_length", 64),
    )
    for collate, tokenizer, padding, length in cases:
        calls = []
        real = tokenizer.__class__.__call__

        def spy(self, batch, *args, _real=real, _calls=calls, **kwargs):
            _calls.append(list(batch))
            return _real(self, batch, *args, **kwargs)

        monkeypatch.setattr(tokenizer.__class__, "__call__", spy)
        for batch in (texts, later, texts):
            expect = real(tokenizer, batch, padding=padding, truncation=True, max_length=length, return_tensors="pt")
            assert torch.equal(collate.tokenize(batch, length), expect["input_ids"])
        monkeypatch.undo()
        assert all(len(c) == len(set(c)) for c in calls)  # no text twice in one tokenizer call
        if padding == "max_length":  # rows kept: only texts never seen before reach the tokenizer
            assert sorted(t for c in calls for t in c) == sorted(set(texts) | set(later))
            monkeypatch.setattr(collate_module, "TEXT_CACHE_SIZE", 6)
            fresh = ["a blue dog", "an owl", "a blue dog"]
            expect = tokenizer(fresh, padding=padding, truncation=True, max_length=length, return_tensors="pt")
            assert torch.equal(collate.tokenize(fresh, length), expect["input_ids"])
            assert set(collate._rows[length]) == set(fresh)  # full: cleared, then refilled
        else:
            assert len(calls) == 3  # batch-dependent width: tokenized per batch, distinct texts only


def test_word_counts_split_each_distinct_text_once_and_count_every_occurrence():
    from fgclip_data.tokenizer import build_word_tokenizer, corpus_words

    texts = ["A red circle", "a red circle", "a red circle", "two blue squares, left"]
    assert corpus_words(texts) == {"a": 3, "red": 3, "circle": 3, "two": 1, "blue": 1, "squares": 1, ",": 1, "left": 1}
    vocab = build_word_tokenizer(texts, "fgclip2").get_vocab()
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][4:7] == ["a", "circle", "red"]  # by count
