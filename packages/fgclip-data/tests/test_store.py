"""The record store: built from FineHARD-format files with the same records and the same report as the JSON
readers (hostile files included), resumable without mixing, refusing truncated, foreign, other-version and
other-source stores with one line, and read back as the same samples as FineHARDDataset."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
from PIL import Image

from fgclip_data import FineHARDDataset, read_records
from fgclip_data.cli import main
from fgclip_data.datasets import ImageResize
from fgclip_data.finehard.samples import SampleOptions, build_sample
from fgclip_data.report import Report
from fgclip_data.store import StoreError, StoreReader, build_store, verify_store
from fgclip_data.store.dataset import FineHARDStore
from fgclip_data.store.manifest import Manifest
from fgclip_data.store.parse import parse_file
from fgclip_data.store.schema import NOT_INT64, NOT_UTF8


def _hostile(folder: Path, make) -> Path:
    """Record files with every kind of bad input the JSON readers report, around good records."""
    folder.mkdir(parents=True)
    good = [make.record(f"g{i}") for i in range(40)]
    bad_box = make.record("b0")
    bad_box["bbox_info"][0]["bbox"] = [0.1, 0.2, 0.3]  # dropped box, record kept
    text_box = make.record("b1")
    text_box["bbox_info"][1]["bbox"] = ["x", 1, 2, 3]
    not_string = make.record("b2", caption=7)
    no_path = make.record("b3")
    del no_path["f_path"]
    chinese = make.record("c0", is_cn={"lang": "zh"}, caption="一只红色的球")
    coerced = make.record("c1")  # lax values pydantic converts: ints as coordinates, a numeric string
    coerced["bbox_info"][0]["bbox"] = [0, 0, 1, "1"]
    coerced["bbox_info"][1]["flag_short_neg"] = True
    no_boxes = make.record("c2", bbox_info=None)
    # hard-negative keys other than FineHARD's "0".."n-1" in order are stored as they are
    named, reordered, empty = make.record("k0"), make.record("k1"), make.record("k2")
    named["bbox_info"][0]["short_expr_negs"] = {"b": "a blue ball", "a": "a green ball", "": "a red cube"}
    reordered["bbox_info"][0]["short_expr_negs"] = {"1": "a blue ball", "0": "a green ball"}
    empty["bbox_info"][0]["short_expr_negs"] = {}
    unflagged = make.record("k3")  # negatives present, flag 0: not used as hard negatives
    unflagged["bbox_info"][0]["flag_short_neg"] = 0
    huge = make.record("k4")  # a JSON integer beyond int64: valid for the schema, not storable in Arrow's int64
    huge["bbox_info"][0]["flag_short_neg"] = 10**20
    array = [*good[:20], bad_box, text_box, not_string, no_path, chinese, coerced, no_boxes]
    array += [named, reordered, empty, unflagged, huge, 5, None]
    (folder / "a.json").write_text(json.dumps(array, ensure_ascii=False))
    lines = [json.dumps(r, ensure_ascii=False) for r in good[20:30]]
    lines[3] = lines[3][:-9]  # truncated line
    lines.insert(5, "")
    lines.insert(6, json.dumps(make.record("s0", caption="lone \ud800 surrogate")))
    (folder / "b.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "c.json").write_text(json.dumps(good[30:]).replace('"short_caption"', 'NaN, "x"', 1))  # malformed
    (folder / "d.json").write_bytes(json.dumps(good[35:])[:-40].encode())  # truncated array
    (folder / "e.jsonl").write_bytes(b"\xff\xfe binary \x00\n" + json.dumps(good[0]).encode() + b"\n")
    (folder / "f.json").write_text("")
    return folder


@pytest.fixture
def hostile(tmp_path, make):
    return _hostile(tmp_path / "records", make)


def _same_report(a: Report, b: Report) -> None:
    assert dict(a.counts) == dict(b.counts)
    assert a.examples == b.examples
    assert a.done["records"] == b.done["records"]


def test_parser_gives_the_json_readers_records_and_report(hostile):
    expected = Report()
    refs = read_records(hostile, expected)
    got, report = [], Report()
    for file in sorted(hostile.iterdir()):
        got += [(str(file), i, r) for i, r in parse_file(file, report) if r is not None]
    assert [(r.file, r.index, r.record) for r in refs] == got
    assert [r.record.dropped_boxes for r in refs] != [[]] * len(refs)  # the hostile set does drop boxes
    _same_report(report, expected)
    assert expected.skipped >= 8


def test_store_reads_back_every_record_with_its_origin(hostile, tmp_path):
    expected = Report()
    refs = read_records(hostile, expected)
    # the differences: values Arrow cannot hold (text that is not UTF-8, an integer beyond int64) are counted skips
    surrogate = next(r for r in refs if "\ud800" in r.record.caption)
    huge = next(r for r in refs if r.record.bbox_info and r.record.bbox_info[0].flag_short_neg > 1)
    for ref, reason, field in ((surrogate, NOT_UTF8, "caption"), (huge, NOT_INT64, "bbox_info.0.flag_short_neg")):
        refs.remove(ref)
        expected.problem(reason, ref.file, ref.index, field)
        expected.done["records"] -= 1
    report = Report()
    manifest = build_store([hostile], tmp_path / "store", batch_rows=4, part_rows=8, report=report)
    _same_report(report, expected)
    assert manifest.complete and manifest.rows == len(refs) and len(manifest.parts) == -(-len(refs) // 8)
    assert manifest.problems == dict(expected.counts)
    reader = StoreReader(tmp_path / "store")
    assert len(reader) == len(refs)
    for i, ref in enumerate(refs):
        got = reader.record(i)
        assert (got.file, got.index) == (ref.file, ref.index)
        assert type(got.record) is type(ref.record) and got.record.model_dump() == ref.record.model_dump()
        if not ref.record.dropped_boxes:  # (a stored record has no boxes left to drop)
            assert got.record == ref.record
        assert got.record.chinese == ref.record.chinese
    assert reader.chinese().tolist() == [r.record.chinese for r in refs]
    assert verify_store(tmp_path / "store") == []


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_build_resumes_to_the_uninterrupted_store(hostile, tmp_path, workers):
    """A build cut after 3 parts and rerun gives the uninterrupted store byte for byte, with the same report;
    with 2 worker processes too (parsing files in parallel changes nothing in the store)."""
    whole = build_store([hostile], tmp_path / "whole", batch_rows=2, part_rows=6)
    first = build_store([hostile], tmp_path / "cut", batch_rows=2, part_rows=6, stop_after_parts=3, workers=workers)
    assert not first.complete and len(first.parts) == 3
    with pytest.raises(StoreError, match="interrupted"):
        StoreReader(tmp_path / "cut")
    (tmp_path / "cut" / ".part.arrow.tmp").write_bytes(b"half a part")  # what a kill leaves behind
    report = Report()
    resumed = build_store([hostile], tmp_path / "cut", batch_rows=2, part_rows=6, report=report, workers=workers)
    assert resumed.parts == whole.parts  # same bytes, part by part
    assert (resumed.problems, resumed.examples) == (whole.problems, whole.examples)
    assert dict(report.counts) == whole.problems
    again = build_store([hostile], tmp_path / "cut", batch_rows=2, part_rows=6)  # complete: nothing to do
    assert again.parts == whole.parts


def test_store_never_mixes_sources_or_sizes(hostile, tmp_path, make):
    build_store([hostile / "a.json"], tmp_path / "s", batch_rows=2, part_rows=4, stop_after_parts=1)
    with pytest.raises(StoreError, match="other sources"):
        build_store([hostile / "b.jsonl"], tmp_path / "s", batch_rows=2, part_rows=4)
    with pytest.raises(StoreError, match="same sizes"):
        build_store([hostile / "a.json"], tmp_path / "s", batch_rows=4, part_rows=8)
    (hostile / "a.json").write_text(json.dumps([make.record("new")]))  # the source changed under the build
    with pytest.raises(StoreError, match="other sources"):
        build_store([hostile / "a.json"], tmp_path / "s", batch_rows=2, part_rows=4)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        build_store([hostile], tmp_path / "other")


def _cli_error(capsys, argv) -> str:
    """stderr of a command that must exit 2 with one ``fgclip-data: error:`` line per problem."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().split("\n") if not line.startswith("records:")]
    assert all(line.startswith("fgclip-data: error: ") for line in lines), lines
    return "\n".join(lines)


def test_cli_builds_verifies_and_refuses_bad_stores_in_one_line(finehard, tmp_path, capsys, make):
    store = tmp_path / "store"
    assert (
        main(
            ["store", "build", str(finehard["jsonfiles"]), "--out", str(store), "--batch-rows", "2", "--part-rows", "4"]
        )
        == 0
    )
    assert "records in store: 8" in capsys.readouterr().out
    assert main(["store", "verify", str(store)]) == 0
    assert "matches its manifest" in capsys.readouterr().out

    assert "not a record store" in _cli_error(capsys, ["store", "verify", str(finehard["jsonfiles"])])  # foreign
    other = tmp_path / "versions"
    other.mkdir()
    manifest = json.loads((store / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    assert "schema version 99" in _cli_error(capsys, ["store", "verify", str(other)])
    with pytest.raises(StoreError, match="schema version 99"):
        StoreReader(other)

    (finehard["jsonfiles"] / "part_001.jsonl").write_text(json.dumps(make.record("changed")) + "\n")
    assert "differs from the one the store was built from" in _cli_error(capsys, ["store", "verify", str(store)])

    part = store / Manifest.load(store).parts[-1].name
    part.write_bytes(part.read_bytes()[:-100])  # truncated
    lines = _cli_error(capsys, ["store", "verify", str(store)]).split("\n")
    assert len(lines) == 2 and "truncated" in lines[0] and "differs" in lines[1]
    with pytest.raises(StoreError, match="truncated"):
        StoreReader(store).record(0)
    part.write_bytes(b"ARROW1" + bytes(500))  # same name, foreign bytes: the size differs too
    with pytest.raises(StoreError):
        StoreReader(store).record(0)


def test_store_dataset_gives_the_json_datasets_samples(finehard, tmp_path):
    build_store([finehard["jsonfiles"]], tmp_path / "store", batch_rows=3, part_rows=3)
    resize = ImageResize(square=32)
    json_data = FineHARDDataset(finehard["jsonfiles"], finehard["images"], resize=resize, seed=5)
    store_data = FineHARDStore(tmp_path / "store", finehard["images"], resize=resize, seed=5)
    store_data = pickle.loads(pickle.dumps(store_data))  # what a spawned loader worker receives
    assert len(store_data) == len(json_data) == 8
    for epoch in (0, 1):
        json_data.set_epoch(epoch)
        store_data.set_epoch(epoch)
        for i in random.Random(epoch).sample(range(8), 8):
            a, b = json_data[i], store_data[i]
            assert (a.caption, a.short_caption, a.boxes, a.box_captions, a.source) == (
                b.caption,
                b.short_caption,
                b.boxes,
                b.box_captions,
                b.source,
            )
            assert (a.hard_boxes, a.hard_texts, a.chinese) == (b.hard_boxes, b.hard_texts, b.chinese)
            assert a.image.tobytes() == b.image.tobytes()
    assert json_data.report.counts == store_data.report.counts


def test_stored_view_builds_the_records_sample(hostile, tmp_path):
    """The light view random access builds samples from gives the validated record's sample, box problems and
    draws included, for every record of the hostile set (negatives unflagged, renamed, empty, Chinese, no boxes)."""
    build_store([hostile], tmp_path / "store", batch_rows=4, part_rows=8)
    reader = StoreReader(tmp_path / "store")
    image = Image.new("RGB", (4, 4))
    options = SampleOptions(negatives=None, max_boxes=3)
    for i in range(len(reader)):
        for mode in ("random", "short", "long"):
            samples, reports = [], []
            for ref in (reader.record(i), reader.view(i)):
                report = Report()
                opts = SampleOptions(**{**options.__dict__, "region_caption": mode})
                sample = build_sample(ref.record, image, opts, random.Random(i), report, "x")
                samples.append({k: v for k, v in sample.__dict__.items() if k != "image"})
                reports.append(dict(report.counts))
            assert samples[0] == samples[1] and reports[0] == reports[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_strict_build_stops_at_the_first_problem_in_one_line(hostile, tmp_path, capsys, workers):
    argv = ["store", "build", str(hostile), "--out", str(tmp_path / "s"), "--strict", "--workers", workers]
    err = _cli_error(capsys, argv)
    assert err == (
        f"fgclip-data: error: {hostile / 'a.json'}, record 20, field 'bbox_info.0.bbox': "
        "malformed box dropped (fewer than 4 coordinates)"
    )
