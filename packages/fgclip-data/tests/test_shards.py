"""WebDataset shards: writing (resumable, checksummed, bad images counted) and streaming (each sample once per
epoch across 2 ranks x 2 workers, resumable mid-epoch)."""

from __future__ import annotations

import json
import tarfile
from collections import Counter

import pytest
import torch

from fgclip_data import FineHARDShards, Sample, read_records, resolve_image_path
from fgclip_data.cli import main
from fgclip_data.fgshapes.generate import GenerateOptions, generate
from fgclip_data.report import Report
from fgclip_data.shards import Manifest, ShardStream, verify_shards, write_shards


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards") / "fgshapes"
    generate(folder, GenerateOptions(n=48, seed=3, workers=1, val_fraction=0.0))
    records = [r.record for r in read_records(folder / "jsonfiles" / "train")]
    images = folder / "grit-12m"
    # one missing and one corrupt image: skipped and counted, never written
    resolve_image_path(records[3].f_path, images).unlink()
    resolve_image_path(records[5].f_path, images).write_bytes(b"not a jpeg")
    return folder, records


def _write(shapes, out, **kwargs):
    folder, _ = shapes
    return write_shards(folder / "jsonfiles" / "train", folder / "grit-12m", out, **kwargs)


def test_write_counts_checksums_and_keeps_image_bytes(shapes, tmp_path):
    folder, records = shapes
    report = Report()
    manifest = _write(shapes, tmp_path / "s", shard_size=7, report=report)
    assert manifest.complete and manifest.samples == len(records) - 2
    assert [s.count for s in manifest.shards] == [7] * 6 + [4]  # 46 samples
    assert manifest.skipped == {"missing image": 1, "corrupt image (UnidentifiedImageError)": 1}
    assert report.counts["missing image"] == 1 and report.done["samples in shards"] == 46
    assert verify_shards(tmp_path / "s") == []
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["000000000000.jpg", "000000000000.json"]
        record = json.loads(tar.extractfile(names[1]).read())
        original = resolve_image_path(record["f_path"], folder / "grit-12m").read_bytes()
        assert tar.extractfile(names[0]).read() == original  # not re-encoded


def test_interrupted_write_resumes_to_the_same_shards(shapes, tmp_path):
    full = _write(shapes, tmp_path / "full", shard_size=7)
    partial = _write(shapes, tmp_path / "resumed", shard_size=7, stop_after_shards=2)
    assert not partial.complete and len(partial.shards) == 2
    with pytest.raises(ValueError, match=r"incomplete .* after 2 shards"):
        ShardStream(tmp_path / "resumed")  # never trained on silently
    resumed = _write(shapes, tmp_path / "resumed", shard_size=7)
    assert resumed.complete
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in full.shards]
    assert resumed.skipped == full.skipped
    with pytest.raises(ValueError, match="refusing to mix"):
        _write(shapes, tmp_path / "resumed", shard_size=5)


def test_verify_finds_a_damaged_shard(shapes, tmp_path):
    _write(shapes, tmp_path / "s", shard_size=10)
    shard = tmp_path / "s" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_shards(tmp_path / "s") == [f"{shard}: SHA-256 differs from the manifest"]
    assert main(["shards", "verify", "--out", str(tmp_path / "s")]) == 1


def _keys(dataset, workers: int, batch_size: int = 3, batches: int | None = None) -> list[str]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list)
    keys = []
    for i, batch in enumerate(loader):
        if batches is not None and i == batches:
            break
        keys += [record.f_path for record, _ in batch]
    return keys


def test_every_sample_once_across_two_ranks_and_two_workers(shapes, tmp_path):
    _write(shapes, tmp_path / "s", shard_size=7)  # 7 shards of uneven size for 4 consumers
    expected = Manifest.load(tmp_path / "s").samples
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            stream = ShardStream(tmp_path / "s", rank=rank, world_size=2)
            stream.set_epoch(epoch)
            seen += _keys(stream, workers=2)
        assert len(seen) == expected and max(Counter(seen).values()) == 1


def test_resume_mid_epoch_continues_without_repeats(shapes, tmp_path):
    _write(shapes, tmp_path / "s", shard_size=7)
    first = ShardStream(tmp_path / "s", rank=0, world_size=2)
    first.set_epoch(1)
    whole = _keys(first, workers=2)
    done = _keys(first, workers=2, batches=3)  # 3 batches of 3, then the run stops
    rest = ShardStream(tmp_path / "s", rank=0, world_size=2)
    rest.resume(epoch=1, batches_done=3, batch_size=3)
    remaining = _keys(rest, workers=2)
    assert len(done) == 9 and done + remaining == whole  # the uninterrupted order, worker roles rotated
    again = ShardStream(tmp_path / "s", rank=0, world_size=2)  # interrupted again, 2 batches after the resume
    again.resume(epoch=1, batches_done=5, batch_size=3)
    assert _keys(again, workers=2) == whole[15:]


def test_shuffle_buffer_mixes_shards_keeps_every_sample_once_and_resumes(shapes, tmp_path):
    _write(shapes, tmp_path / "s", shard_size=7)
    expected = Manifest.load(tmp_path / "s").samples

    def stream(rank: int, buffer: int) -> ShardStream:
        out = ShardStream(tmp_path / "s", rank=rank, world_size=2, shuffle_buffer=buffer)
        out.set_epoch(2)
        return out

    plain = _keys(stream(0, 0), workers=2)
    mixed = _keys(stream(0, 8), workers=2)
    assert sorted(mixed) == sorted(plain) and mixed != plain
    assert _keys(stream(0, 8), workers=2) == mixed  # seeded: the same order again
    both = mixed + _keys(stream(1, 8), workers=2)
    assert len(both) == expected and max(Counter(both).values()) == 1

    done = _keys(stream(0, 8), workers=2, batches=3)
    rest = ShardStream(tmp_path / "s", rank=0, world_size=2, shuffle_buffer=8)
    rest.resume(epoch=2, batches_done=3, batch_size=3)
    remaining = _keys(rest, workers=2)
    assert done + remaining == mixed
    with pytest.raises(ValueError, match="shuffle_buffer"):
        ShardStream(tmp_path / "s", shuffle_buffer=-1)


def test_training_samples_from_shards(shapes, tmp_path):
    from fgclip_data import ImageResize

    _write(shapes, tmp_path / "s", shard_size=7)
    dataset = FineHARDShards(tmp_path / "s", resize=ImageResize(square=32))
    samples = list(dataset)
    assert len(samples) == len(dataset) == 46
    assert all(isinstance(s, Sample) and s.image.size == (32, 32) for s in samples)
    assert all(s.boxes for s in samples)


def test_cli_write(shapes, tmp_path, capsys):
    folder, _ = shapes
    argv = ["shards", "write", "--data", str(folder / "jsonfiles" / "train"), "--images", str(folder / "grit-12m")]
    assert main([*argv, "--out", str(tmp_path / "s"), "--shard-size", "20"]) == 0
    out = capsys.readouterr().out
    assert "46 samples in 3 shards" in out and "missing image: 1" in out
    assert main([*argv, "--out", str(tmp_path / "s"), "--shard-size", "0"]) == 2


def test_resume_refuses_a_changed_shard_and_foreign_manifests(shapes, tmp_path):
    _write(shapes, tmp_path / "s", shard_size=7, stop_after_shards=2)
    shard = tmp_path / "s" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-512])
    with pytest.raises(ValueError, match="does not match the manifest"):
        _write(shapes, tmp_path / "s", shard_size=7)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not 'fgclip-shards/1'"):
        ShardStream(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="shards write"):
        ShardStream(tmp_path / "nowhere")


def test_a_sample_without_its_record_is_an_error(shapes, tmp_path):
    import io

    _write(shapes, tmp_path / "s", shard_size=50)
    shard = tmp_path / "s" / "shard-000000.tar"
    with tarfile.open(shard) as tar:  # rewrite the shard without the first sample's .json member
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != "000000000000.json"]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"sample 000000000000: expected an image and a \.json member"):
        list(ShardStream(tmp_path / "s"))


def test_writer_and_reader_share_the_sample_rules(finehard, tmp_path):
    """A record no sample can be built from (empty caption or short caption) is not packed: the manifest counts
    exactly the samples the reader yields."""
    from fgclip_data import ImageResize
    from fgclip_data.finehard.samples import Skipped

    records = finehard["records"]
    array = records[:5]
    array[1]["caption"] = ""
    array[3]["short_caption"] = "   "
    (finehard["jsonfiles"] / "part_000.json").write_text(json.dumps(array))
    report = Report()
    manifest = write_shards(finehard["jsonfiles"], finehard["images"], tmp_path / "s", shard_size=4, report=report)
    assert manifest.samples == len(records) - 2 and manifest.skipped == {"empty caption": 2}
    shown = report.examples["empty caption"]
    assert "record 1, field 'caption'" in shown[0] and "record 3, field 'short_caption'" in shown[1]
    items = list(FineHARDShards(tmp_path / "s", resize=ImageResize(square=32)))
    assert not [s for s in items if isinstance(s, Skipped)]
    assert len(items) == manifest.samples
