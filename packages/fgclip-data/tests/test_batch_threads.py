"""A batch's images decoded and processed on the training process's threads: the same samples and pixels as one
thread, in order; errors and bad images as before; one thread inside a loader worker."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils.data import DataLoader
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

import fgclip_data.collate
import fgclip_data.threads
from fgclip_data import FGCLIP2Collator, FineHARDDataset, SampleOptions
from fgclip_data.threads import batch_threads, chunks, thread_map


@pytest.fixture
def one_thread(monkeypatch):
    """Turn the batch threads off (the reference the threaded results must equal)."""

    def apply():
        monkeypatch.setattr(fgclip_data.threads, "batch_threads", lambda: 1)
        monkeypatch.setattr(fgclip_data.collate, "batch_threads", lambda: 1)

    return apply


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_thread_map_keeps_order_and_raises_like_the_loop(two_torch_threads):
    names = thread_map(lambda k: (k, threading.current_thread().name), list(range(40)))
    assert [k for k, _ in names] == list(range(40))
    assert {n for _, n in names} <= {n for n in (t.name for t in threading.enumerate())} | {"MainThread"}
    assert any(n.startswith("fgclip-batch") for _, n in names)  # the pool did the work

    def bad(k):
        if k == 7:
            raise ValueError("record 7")
        return k

    with pytest.raises(ValueError, match="record 7"):
        thread_map(bad, list(range(20)))
    assert thread_map(lambda k: batch_threads(), [0, 1]) == [1, 1]  # no pool inside the pool


@pytest.mark.parametrize(("n", "count"), [(0, 2), (1, 2), (5, 2), (32, 2), (7, 3), (3, 8)])
def test_chunks_cover_the_items_in_order(n, count):
    parts = chunks(list(range(n)), count)
    assert [x for part in parts for x in part] == list(range(n))
    assert all(parts) and len(parts) == max(1, min(count, n)) if n else parts == [[]]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_threaded_batch_equals_one_thread(finehard, gemma_like_tokenizer, two_torch_threads, one_thread):
    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], options=SampleOptions(negatives=None))
    processor = Siglip2ImageProcessorPil()
    collators = {
        "fixed": FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64),
        "per batch": FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=64, min_num_patches=8),
        "bucket": FGCLIP2Collator(gemma_like_tokenizer, processor, max_num_patches=None),
    }
    indices = list(range(len(data)))
    threaded_samples = data.__getitems__(indices)
    threaded = {name: collate(threaded_samples) for name, collate in collators.items()}
    one_thread()
    samples = data.__getitems__(indices)
    assert [s.image.tobytes() for s in samples] == [s.image.tobytes() for s in threaded_samples]
    assert [s.short_caption for s in samples] == [s.short_caption for s in threaded_samples]
    for name, collate in collators.items():
        batch = collate(samples)
        for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes", "text_short", "hard_texts"):
            assert torch.equal(getattr(batch, key), getattr(threaded[name], key)), (name, key)


def test_bad_images_are_skipped_in_place_by_the_threads(finehard, two_torch_threads):
    (finehard["images"] / "coyo_image_0/00000/k1.jpg").unlink()
    (finehard["images"] / "coyo_image_0/00000/k2.jpg").write_bytes(b"not a jpeg")
    data = FineHARDDataset(finehard["jsonfiles"], finehard["images"])
    items = data.__getitems__([0, 1, 2, 3])
    assert [type(x).__name__ for x in items] == ["Sample", "Skipped", "Skipped", "Sample"]
    assert data.report.counts["missing image"] == 1


def _worker_threads(batch):
    return batch_threads()


def test_a_loader_worker_prepares_on_its_own_thread(finehard, two_torch_threads):
    loader = DataLoader(list(range(4)), batch_size=2, num_workers=1, collate_fn=_worker_threads)
    assert list(loader) == [1, 1]
    assert batch_threads() == 2  # the training process itself uses torch's threads
