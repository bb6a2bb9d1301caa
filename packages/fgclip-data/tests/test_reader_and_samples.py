"""Schema, streaming reader, path resolution and the per-record sample rules."""

from __future__ import annotations

import json
import random

import pytest

from fgclip_data import DataError, Report, iter_records, read_records, resolve_image_path
from fgclip_data.finehard.samples import SampleOptions, build_regions, build_sample, clip_box
from fgclip_data.schema import FineHARDRecord


def test_reads_arrays_lines_listings_and_folders(finehard, tmp_path):
    refs = read_records(finehard["jsonfiles"])
    assert [r.record.f_path for r in refs] == [r["f_path"] for r in finehard["records"]]
    assert refs[0].record.bbox_info[0].negatives == [f"a blue ball {i}" for i in range(10)]
    assert refs[6].file.endswith("part_001.jsonl") and refs[6].index == 1
    listing = tmp_path / "list.txt"
    listing.write_text("FineHARD/jsonfiles/part_001.jsonl\n")
    assert len(read_records(listing)) == 3
    with pytest.raises(FileNotFoundError, match="holds no"):
        read_records(tmp_path / "grit-12m")


def test_streaming_is_lazy_and_survives_malformed_json(tmp_path, make):
    file = tmp_path / "broken.json"
    file.write_text("[" + json.dumps(make.record("a")) + "," + json.dumps(make.record("b")) + ', {"f_path": ')
    report = Report()
    stream = iter_records(file, report)
    first = next(stream)  # produced before the parser reaches the broken tail
    assert first.record.f_path.endswith("a.jpg")
    assert len(list(stream)) == 1
    assert report.skipped == 1
    (reason,) = report.counts
    assert reason.startswith("malformed JSON array") and "rest of the file skipped" in reason
    assert report.examples[reason] == [f"{file}, record 2"]
    lines = tmp_path / "lines.jsonl"
    lines.write_text(json.dumps(make.record("a")) + "\n{oops\n" + json.dumps(make.record("c")) + "\n")
    report = Report()
    assert len(read_records(lines, report)) == 2
    assert report.skipped == 1 and "record 1" in report.examples[next(iter(report.examples))][0]


def test_invalid_records_name_file_record_and_field(tmp_path, make):
    file = tmp_path / "bad.json"
    bad = make.record("x")
    bad["bbox_info"][1]["bbox"] = [0.1, 0.2]
    file.write_text(json.dumps([make.record("ok"), bad, {"f_path": "p", "caption": "c"}]))
    report = Report()
    records = read_records(file, report)
    assert len(records) == 2  # the malformed box drops the box, not its record
    kept = records[1].record
    assert len(kept.bbox_info) == len(bad["bbox_info"]) - 1 and kept.dropped_boxes == [(1, "fewer than 4 coordinates")]
    assert kept.bbox_info[0].bbox == bad["bbox_info"][0]["bbox"]
    assert report.counts == {"malformed box dropped (fewer than 4 coordinates)": 1, "invalid record: Field required": 1}
    assert report.examples["malformed box dropped (fewer than 4 coordinates)"] == [
        f"{file}, record 1, field 'bbox_info.1.bbox'"
    ]
    with pytest.raises(DataError) as err:
        read_records(file, Report(strict=True))
    assert err.value.file == str(file) and err.value.record == 1 and err.value.field == "bbox_info.1.bbox"
    assert "bad.json, record 1, field 'bbox_info.1.bbox'" in str(err.value)


def test_image_path_resolution(tmp_path):
    f_path = "grit-20m/data-12m/coyo_image_3/00042/SYNTH000123.jpg"
    assert resolve_image_path(f_path, tmp_path / "grit-12m") == tmp_path / "grit-12m/coyo_image_3/00042/SYNTH000123.jpg"
    for escaping in ("grit-20m/data-12m/../../etc/passwd", "/etc/passwd", "a/../../b.jpg"):
        with pytest.raises(ValueError, match="escape"):
            resolve_image_path(escaping, tmp_path)


@pytest.mark.parametrize(
    ("box", "kept", "problem"),
    [
        ([0.1, 0.1, 0.5, 0.5], (0.1, 0.1, 0.5, 0.5), None),
        ([-0.2, 0.1, 1.3, 0.5], (0.0, 0.1, 1.0, 0.5), "clipped"),
        ([0.5, 0.1, 0.2, 0.5], None, "x2 < x1"),
        ([0.3, 0.3, 0.3, 0.6], None, "degenerate"),
        ([1.2, 0.1, 1.5, 0.5], None, "degenerate"),
        ([float("nan"), 0.1, 0.5, 0.5], None, "NaN"),
    ],
)
def test_box_rules(box, kept, problem):
    got, why = clip_box(box, 1e-3)
    assert got == kept
    assert (why is None) if problem is None else (problem in why)


def test_regions_respect_slots_counts_and_captions(make):
    boxes = [
        {
            "bbox": [0.1, 0.1, 0.2, 0.2],
            "short_expr": "A",
            "long_expr": "",
            "flag_short_neg": 1,
            "short_expr_negs": make.negs("n", 3),
        },
        {"bbox": [0.5, 0.5, 0.4, 0.6], "short_expr": "bad box"},
        {"bbox": [0.1, 0.1, 0.2, 0.2], "short_expr": "", "long_expr": ""},
        {"bbox": [0.1, 0.1, 0.3, 0.3], "short_expr": "C", "long_expr": "c long", "flag_short_neg": 1},
        {
            "bbox": [0.1, 0.1, 0.4, 0.4],
            "short_expr": "D",
            "long_expr": "d",
            "flag_short_neg": 1,
            "short_expr_negs": make.negs("d", 10),
        },
        {"bbox": [0.1, 0.1, 0.5, 0.5], "short_expr": "E", "long_expr": "e"},
    ]
    rec = FineHARDRecord.model_validate(make.record("r", boxes))
    report = Report()
    got = build_regions(rec, SampleOptions(max_boxes=3, negatives=10), random.Random(0), report, "here")
    boxes_out, captions, hard_boxes, hard_texts = got
    assert len(boxes_out) == 3  # A, C, D (bad and caption-less boxes dropped, E beyond the slots)
    assert captions[0] == "a" and hard_boxes == [(0.1, 0.1, 0.4, 0.4)] and hard_texts[0][0] == "d"
    assert len(hard_texts[0]) == 11
    reasons = " | ".join(report.counts)
    assert "3 hard negatives instead of 10" in reasons and "x2 < x1" in reasons
    assert "without a region caption" in reasons and "flag_short_neg set but no negatives" in reasons
    # any count when the options say so
    _, _, hard_boxes, hard_texts = build_regions(rec, SampleOptions(negatives=None), random.Random(0), Report(), "")
    assert [len(t) for t in hard_texts] == [4, 11]


def test_sample_captions(finehard, make):
    rec = FineHARDRecord.model_validate(make.record("r", short_caption="A photo of a cat"))
    sample = build_sample(rec, None, SampleOptions(), random.Random(0), Report(), "")
    assert sample.short_caption == "a photo of a cat"  # prefix not added twice, lower-cased
    rec = FineHARDRecord.model_validate(make.record("r", short_caption="Cat"))
    assert build_sample(rec, None, SampleOptions(), random.Random(0), Report(), "").short_caption == "a photo of cat"
    zh = FineHARDRecord.model_validate(make.record("r", short_caption="一只猫", is_cn=True))
    assert build_sample(zh, None, SampleOptions(), random.Random(0), Report(), "").short_caption == "一只猫"
    empty = FineHARDRecord.model_validate(make.record("r", caption="  "))
    report = Report()
    assert type(build_sample(empty, None, SampleOptions(), random.Random(0), report, "")).__name__ == "Skipped"
    assert report.counts["empty caption"] == 1
