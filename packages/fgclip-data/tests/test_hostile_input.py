"""Hostile input through the public APIs and commands: decompression bombs, broken record files, malformed boxes,
url2key values and metadata, foreign output folders. Nothing crashes, nothing is overwritten, every skip is
counted by kind."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from fgclip_data import FineHARDDataset, read_records
from fgclip_data.cli import main
from fgclip_data.datasets import FineHARDStream, ImageResize
from fgclip_data.finehard.rename import rename
from fgclip_data.finehard.samples import Skipped
from fgclip_data.images import BOMB, BadImage, decode_rgb
from fgclip_data.report import Report
from fgclip_data.shards import write_shards


@pytest.fixture
def bombed(finehard, bomb_png):
    """The FineHARD fixture with image k2 replaced by a decompression bomb."""
    path = finehard["images"] / "coyo_image_0" / "00000" / "k2.jpg"
    path.write_bytes(bomb_png)
    return finehard


def test_the_bomb_is_a_bad_image_not_a_crash(tmp_path, bomb_png):
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    assert len(bomb_png) < 100
    with pytest.raises(Image.DecompressionBombError):  # what every reader used to let through
        Image.open(tmp_path / "bomb.png")
    with pytest.raises(BadImage) as err:
        decode_rgb(tmp_path / "bomb.png")
    assert err.value.reason == BOMB and str(tmp_path / "bomb.png") in str(err.value)
    with pytest.raises(BadImage, match="over the pixel limit"):
        decode_rgb(bomb_png)


def test_datasets_skip_and_count_the_bomb(bombed):
    data = FineHARDDataset(bombed["jsonfiles"], bombed["images"], resize=ImageResize(square=32))
    samples = [data[i] for i in range(len(data))]
    assert sum(isinstance(s, Skipped) for s in samples) == 1
    assert data.report.counts[BOMB] == 1 and "part_000.json, record 2" in data.report.examples[BOMB][0]
    stream = FineHARDStream(bombed["jsonfiles"], bombed["images"], resize=ImageResize(square=32), rank=0, world_size=1)
    streamed = list(stream)
    assert len(streamed) == 8 and sum(isinstance(s, Skipped) for s in streamed) == 1
    assert stream.report.counts[BOMB] == 1


def test_check_and_shards_count_the_bomb_and_finish(bombed, tmp_path, capsys):
    args = ["finehard", "check", "--data", str(bombed["jsonfiles"]), "--images", str(bombed["images"])]
    assert main(args) == 1
    assert f"{BOMB}: 1" in capsys.readouterr().out
    report = Report()
    manifest = write_shards(bombed["jsonfiles"], bombed["images"], tmp_path / "shards", shard_size=3, report=report)
    assert manifest.complete and manifest.samples == 7 and manifest.skipped == {BOMB: 1}
    again = write_shards(bombed["jsonfiles"], bombed["images"], tmp_path / "shards", shard_size=3)
    assert again.complete and again.samples == 7  # a rerun finds the complete set; no crash, nothing rewritten


def test_huge_legal_jpeg_decodes_at_reduced_scale(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (5000, 4000), (10, 200, 30)).save(path, quality=50)
    assert decode_rgb(path).size == (5000, 4000)  # no target: full size
    small = decode_rgb(path, target=224)
    assert small.size[0] < 5000 and min(small.size) >= 224 and small.getpixel((5, 5))[1] > 150


def test_malformed_boxes_drop_the_box_and_keep_the_record(tmp_path, make):
    boxes = [
        {"bbox": [0.1, 0.1, 0.4], "short_expr": "three numbers"},
        {"bbox": ["a", 0.1, 0.4, 0.5], "short_expr": "not a number"},
        "not even an object",
        {"bbox": [0.2, 0.2, 0.6, 0.7], "short_expr": "a good box", "long_expr": "a good long box"},
    ]
    (tmp_path / "r.json").write_text(json.dumps([make.record("a", boxes=boxes)]))
    report = Report()
    (ref,) = read_records(tmp_path / "r.json", report)
    assert [b.short_expr for b in ref.record.bbox_info] == ["a good box"]
    assert report.counts == {
        "malformed box dropped (fewer than 4 coordinates)": 1,
        "malformed box dropped (non-numeric coordinates)": 1,
        "malformed box dropped (model_type)": 1,
    }
    assert report.examples["malformed box dropped (non-numeric coordinates)"] == [
        f"{tmp_path / 'r.json'}, record 0, field 'bbox_info.1.bbox'"
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty record file"),
        (b"\n  \n", "empty record file"),
        (b"\x00\x9f\xff\xfe binary \x81\n", "line is not UTF-8 text (binary file?)"),
        (b'[{"f_path": "a.jpg", "caption": "c", "short_capt', "JSON array; rest of the file skipped"),
        (b"{not json\n", "malformed JSON line"),
    ],
)
def test_broken_record_files_are_reported_by_kind(tmp_path, content, reason):
    (tmp_path / "broken.json").write_bytes(content)
    report = Report()
    assert read_records(tmp_path / "broken.json", report) == []
    assert any(reason in r for r in report.counts), report.counts
    assert all(str(tmp_path) not in r for r in report.counts)  # the path is in the detail, not in the reason


def test_listing_naming_missing_record_files_is_a_clear_error(tmp_path):
    (tmp_path / "list.txt").write_text("part_000.json\n")
    with pytest.raises(FileNotFoundError, match="lists record files that do not exist"):
        read_records(tmp_path / "list.txt")


def _download(root, key, url, image=b"img", meta=None):
    folder = root / "coyo_image_0" / "00000" / "00000"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.json").write_text(meta if meta is not None else json.dumps({"url": url, "key": key}))
    (folder / f"{key}.jpg").write_bytes(image)


def test_rename_survives_bad_url2key_values_and_metadata(tmp_path):
    down, url2key, out = tmp_path / "down", tmp_path / "url2key", tmp_path / "out"
    url2key.mkdir()
    (url2key / "a.json").write_text(json.dumps({"u/1": "K1", "u/2": 42, "u/3": {"k": 1}, "u/4": None, "u/5": "K5"}))
    (url2key / "zz.json").write_bytes(b"\xff\xfe\x00 not json")
    _download(down, "000000001", "u/1")
    _download(down, "000000002", "u/2")
    _download(down, "000000003", "u/3", meta="{truncated")
    _download(down, "000000004", "u/4", meta=json.dumps({"url": "u/4", "key": "../../x"}))
    _download(down, "000000005", "u/5", meta=json.dumps({"url": ["u/5"], "key": "000000005"}))
    report = rename(url2key, down, out)
    assert report.done["copied"] == 1 and (out / "coyo_image_0" / "00000" / "K1.jpg").is_file()
    assert report.counts["url2key value is not a string (entry ignored)"] == 3
    assert report.counts["malformed url2key JSON; rest of the file skipped"] == 1
    assert report.counts["unreadable download metadata"] == 1
    assert report.counts["download metadata with a malformed key or url"] == 2


def test_rename_never_overwrites_an_existing_sidecar(tmp_path):
    down, url2key, out = tmp_path / "down", tmp_path / "url2key", tmp_path / "out"
    url2key.mkdir()
    (url2key / "a.json").write_text(json.dumps({"u/1": "K1", "u/2": "K2"}))
    _download(down, "000000001", "u/1")
    _download(down, "000000002", "u/2")
    target = out / "coyo_image_0" / "00000"
    target.mkdir(parents=True)
    (target / "K1.json").write_text('{"someone": "else"}')
    report = rename(url2key, down, out)
    assert (target / "K1.json").read_text() == '{"someone": "else"}' and not (target / "K1.jpg").exists()
    assert report.counts["destination metadata exists with other content: not overwritten"] == 1
    assert report.done["copied"] == 1 and json.loads((target / "K2.json").read_text())["key"] == "K2"
    again = rename(url2key, down, out)  # idempotent: K2's own sidecar is not "other content"
    assert again.done["already present"] == 1


def test_shards_refuse_a_folder_they_did_not_write(finehard, tmp_path, capsys):
    out = tmp_path / "not-mine"
    out.mkdir()
    (out / "shard-000000.tar").write_bytes(b"someone else's shard")
    with pytest.raises(ValueError, match=r"holds no manifest\.json"):
        write_shards(finehard["jsonfiles"], finehard["images"], out)
    assert (out / "shard-000000.tar").read_bytes() == b"someone else's shard"
    args = ["shards", "write", "--data", str(finehard["jsonfiles"]), "--images", str(finehard["images"])]
    assert main([*args, "--out", str(out)]) == 2
    assert "choose an empty folder" in capsys.readouterr().err


def test_escaping_f_path_is_one_reason_whatever_the_path(tmp_path, make):
    records = [make.record(f"k{i}", f_path=f"../../outside/{i}.jpg") for i in range(3)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    report = Report()
    write_shards(tmp_path / "r.json", tmp_path, tmp_path / "shards", report=report)
    assert report.counts == {"f_path outside the image root": 3}
