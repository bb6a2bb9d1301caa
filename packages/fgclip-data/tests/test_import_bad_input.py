"""Bad input to ``fgclip-data import``: a counted skip or one clear line (exit 2), never a traceback; a non-empty
output is resumed (the same import) or refused (anything else), never mixed."""

from __future__ import annotations

import json

import pytest
from _import_samples import by_path, cli, coco_sample, image, records, write_img2dataset_shard

from fgclip_data.importers import SOURCES, ImportOptions, run_import
from fgclip_data.importers import engine as engine_module


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1]
    assert last.startswith("fgclip-data: error: ") and all(n in last for n in needles), err
    assert not any("Traceback" in line for line in err)
    return last


def photos(root, n=4):
    for i in range(n):
        image(root / f"x{i}.jpg", seed=i)
        (root / f"x{i}.txt").write_text(f"caption {i}")
    return root


# ------------------------------------------------------------------------------------- not the declared format


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("t.csv", b"\x00\x01\x02binary\xff\xfe", "not a"),
        ("t.parquet", b"filepath,title\nx.jpg,hello\n", "is not a Parquet file"),
        ("t.jsonl", b"filepath,title\nx.jpg,hello\n", "is not JSON Lines"),
        ("t.xlsx", b"whatever", "unknown table format"),
    ],
)
def test_table_not_of_its_format(tmp_path, capsys, name, content, needle):
    (tmp_path / name).write_bytes(content)
    assert cli("table", tmp_path / name, "--out", tmp_path / "out") == 2
    one_line_error(capsys, name, needle)


def test_missing_columns_name_the_column_and_list_the_others(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("path,text\nx.jpg,hello\n")
    assert cli("table", tmp_path / "t.csv", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "t.csv", "no column 'filepath'", "path, text")
    assert cli("table", tmp_path / "t.csv", "--image-key", "path", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "no column 'title'")


def test_coco_files_that_are_not_coco(tmp_path, capsys):
    s = coco_sample(tmp_path / "coco", n=1)
    bad = tmp_path / "bad.json"
    bad.write_text("this is not json")
    assert cli("coco", "--images", s["images"], "--captions", bad, "--out", tmp_path / "o1") == 2
    one_line_error(capsys, "bad.json", "is not a JSON file")
    bad.write_text(json.dumps({"annotations": []}))
    assert cli("coco", "--images", s["images"], "--instances", bad, "--out", tmp_path / "o2") == 2
    one_line_error(capsys, "bad.json", "no 'images' list")
    # a captions file given as instances: its annotations have no bbox
    assert cli("coco", "--images", s["images"], "--instances", s["captions"], "--out", tmp_path / "o3") == 2
    one_line_error(capsys, "captions_train2017.json", "not a COCO instances file")


def test_odvg_and_webdataset_not_of_their_format(tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": "hi"}) + "\n")
    assert cli("odvg", tmp_path / "x.jsonl", "--images", tmp_path, "--out", tmp_path / "o1") == 2
    one_line_error(capsys, "x.jsonl", "is not ODVG JSON Lines")
    (tmp_path / "s.tar").write_bytes(b"not a tar at all" * 10)
    assert cli("webdataset", tmp_path / "s.tar", "--out", tmp_path / "o2") == 2
    one_line_error(capsys, "s.tar", "is not a readable tar file")


# ------------------------------------------------------------------------------------------ counted skips


def test_missing_and_corrupt_images_are_counted_skips(tmp_path, capsys):
    paths = [image(tmp_path / f"i{k}.jpg", seed=k).name for k in range(3)]
    (tmp_path / "i2.jpg").write_bytes(b"not an image")
    rows = ["filepath,title", *[f"{p},caption" for p in paths], "gone.jpg,caption"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert cli("table", tmp_path / "t.csv", "--out", tmp_path / "out", "--val-size", 0) == 0
    out = capsys.readouterr().out
    assert "missing image: 1" in out and "corrupt image" in out and "train records: 2" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["problems"]["missing image"] == 1 and report["done"]["train records"] == 2


def test_box_problems_are_counted_per_box(tmp_path):
    root = tmp_path / "p"
    image(root / "x.jpg", size=(100, 50))
    (root / "x.txt").write_text("things")
    boxes = [
        {"bbox": [10, 5, 50, 40], "phrase": "a red ball"},  # pixels -> converted with the image size
        {"bbox": [50, 10, 160, 40], "phrase": "a cup"},  # reaches outside the image
        {"bbox": [20, 20, 30, 30], "phrase": "  "},  # empty region caption
        {"bbox": [30, 30, 10, 10], "phrase": "a box"},  # no area
        {"bbox": [1, 2, "x", 3], "phrase": "a pen"},  # not numbers
    ]
    (root / "x.json").write_text(json.dumps({"boxes": boxes}))
    report = run_import(SOURCES["folder"](root), tmp_path / "out", ImportOptions(val_size=0))
    (rec,) = records(tmp_path / "out")["train"]
    assert [b.short_expr for b in rec.bbox_info] == ["a red ball"]
    assert rec.bbox_info[0].xyxy == pytest.approx((0.1, 0.1, 0.5, 0.8))
    problems = json.loads((tmp_path / "out" / "report.json").read_text())["problems"]
    assert problems == {
        "box outside the image; dropped": 1,
        "box with an empty region caption / category name dropped": 1,
        "box without area (x2 <= x1 or y2 <= y1); dropped": 1,
        "box is not 4 numbers; dropped": 1,
    }
    assert report["skipped"] == 4


def test_pixel_boxes_refused_when_the_declared_size_is_not_the_images(tmp_path):
    s = coco_sample(tmp_path / "coco", n=2)
    data = json.loads(s["instances"].read_text())
    data["images"][0]["width"] = 640  # the JSON says 640 x 48, the image is 64 x 48: which one the boxes use is unknown
    data["categories"][1]["name"] = ""  # an empty category name
    s["instances"].write_text(json.dumps(data))
    run_import(SOURCES["coco"](s["images"], instances=s["instances"]), tmp_path / "out", ImportOptions(val_size=0))
    got = by_path(tmp_path / "out")
    assert "000000000000.jpg" not in got or not got["000000000000.jpg"].bbox_info
    problems = json.loads((tmp_path / "out" / "report.json").read_text())["problems"]
    assert problems["box in pixels but the annotation's image size is not the image's; dropped"] == 1  # the dog
    assert problems["box with an empty region caption / category name dropped"] == 1  # the nameless cat
    assert problems["no caption (and no box to make one from)"] == 1  # image 0: instances only, no box left
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (
        "(declared (640, 48), image (64, 48))"
        in report["examples"]["box in pixels but the annotation's image size is not the image's; dropped"][0]
    )
    assert got["000000000001.jpg"].bbox_info[0].short_expr == "sofa"


def test_declared_normalised_boxes_above_one_are_refused(tmp_path):
    (tmp_path / "i.jpg").parent.mkdir(exist_ok=True)
    image(tmp_path / "i.jpg")
    box = json.dumps([{"bbox": [10, 10, 20, 20], "phrase": "a cup"}]).replace('"', '""')
    (tmp_path / "t.csv").write_text(f'filepath,title,boxes\ni.jpg,a cup,"{box}"\n')
    code = cli("table", tmp_path / "t.csv", "--boxes-key", "boxes", "--box-unit", "normalized", "--out", tmp_path / "o")
    assert code == 0
    problems = json.loads((tmp_path / "o" / "report.json").read_text())["problems"]
    assert problems == {"box declared normalised has coordinates above 1 (pixels?); dropped": 1}


def test_strict_stops_at_the_first_bad_item(tmp_path, capsys):
    root = photos(tmp_path / "p")
    (root / "x1.jpg").write_bytes(b"broken")
    assert cli("folder", root, "--out", tmp_path / "out", "--strict") == 2
    one_line_error(capsys, "x1.jpg", "corrupt image")


# ------------------------------------------------------------------------------------------ resume / refuse


def test_interrupted_import_resumes_to_the_same_result(tmp_path, monkeypatch):
    root = photos(tmp_path / "p", n=9)
    options = ImportOptions(val_size=3, chunk_size=2, seed=1)
    run_import(SOURCES["folder"](root), tmp_path / "whole", options)

    real, calls = engine_module.convert, []

    def failing(candidate, *args):
        calls.append(candidate.key)
        if len(calls) == 6:
            raise KeyboardInterrupt  # killed in the middle of the third chunk
        return real(candidate, *args)

    monkeypatch.setattr(engine_module, "convert", failing)
    with pytest.raises(KeyboardInterrupt):
        run_import(SOURCES["folder"](root), tmp_path / "cut", options)
    monkeypatch.setattr(engine_module, "convert", real)
    assert not json.loads((tmp_path / "cut" / "manifest.json").read_text())["complete"]
    manifest = run_import(SOURCES["folder"](root), tmp_path / "cut", options)
    assert manifest["resumed"] and manifest["complete"] and manifest["counts"] == {"train": 6, "val": 3}
    for split in ("train", "val"):
        whole = sorted((tmp_path / "whole" / "jsonfiles" / split).glob("*.jsonl"))
        cut = sorted((tmp_path / "cut" / "jsonfiles" / split).glob("*.jsonl"))
        assert [p.read_text() for p in whole] == [p.read_text() for p in cut]
    # a finished import rerun: nothing converted again
    calls.clear()
    monkeypatch.setattr(engine_module, "convert", failing)
    assert run_import(SOURCES["folder"](root), tmp_path / "cut", options)["resumed"] and not calls


def test_a_different_import_is_refused(tmp_path, capsys):
    root = photos(tmp_path / "p")
    assert cli("folder", root, "--out", tmp_path / "out") == 0
    assert cli("folder", root, "--out", tmp_path / "out", "--seed", "7") == 2
    one_line_error(capsys, "holds another import", "options differ")
    other = photos(tmp_path / "q")
    assert cli("folder", other, "--out", tmp_path / "out") == 2
    one_line_error(capsys, "source_options differ")
    image(root / "x9.jpg")
    (root / "x9.txt").write_text("new")
    assert cli("folder", root, "--out", tmp_path / "out") == 2  # the source changed since: not the same items
    one_line_error(capsys, "holds another import")
    write_img2dataset_shard(tmp_path / "s" / "0.tar", 0, 2)
    assert cli("webdataset", tmp_path / "s", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "source differ")


def test_non_empty_folder_without_manifest_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    assert cli("folder", photos(tmp_path / "p"), "--out", tmp_path / "out") == 2
    one_line_error(capsys, "is not empty and holds no import manifest")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_two_images_with_one_key_are_refused(tmp_path, capsys):
    root = photos(tmp_path / "p", n=1)
    image(root / "x0.png")
    assert cli("folder", root, "--out", tmp_path / "out") == 2
    one_line_error(capsys, "share the key 'x0'")


def test_caption_without_image_and_escaping_paths_are_counted(tmp_path):
    root = photos(tmp_path / "p", n=2)
    (root / "orphan.txt").write_text("a caption whose image is gone")
    run_import(SOURCES["folder"](root), tmp_path / "o1", ImportOptions(val_size=0))
    problems = json.loads((tmp_path / "o1" / "report.json").read_text())["problems"]
    assert problems == {"caption file without an image (missing image)": 1}
    s = coco_sample(tmp_path / "coco", n=2)
    data = json.loads(s["captions"].read_text())
    data["images"][0]["file_name"] = "../../outside.jpg"
    s["captions"].write_text(json.dumps(data))
    manifest = run_import(
        SOURCES["coco"](s["images"], captions=s["captions"]), tmp_path / "o2", ImportOptions(val_size=0)
    )
    assert manifest["counts"]["train"] == 1
    problems = json.loads((tmp_path / "o2" / "report.json").read_text())["problems"]
    assert problems == {"image path would leave the output folder (absolute or '..')": 1}


@pytest.mark.parametrize(("original", "kept"), [((40, 30), True), ((400, 300), False)])
def test_webdataset_pixel_boxes_only_at_the_downloaded_size(tmp_path, original, kept):
    import io
    import tarfile

    from _import_samples import jpeg_bytes

    meta = {"caption": "a cup", "original_width": original[0], "original_height": original[1],
            "boxes": [{"bbox": [4, 3, 20, 15], "phrase": "a cup"}]}  # fmt: skip
    with tarfile.open(tmp_path / "0.tar", "w") as tar:
        for ext, data in (("jpg", jpeg_bytes((40, 30))), ("json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(f"k.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    run_import(SOURCES["webdataset"]([tmp_path / "0.tar"]), tmp_path / "out", ImportOptions(val_size=0))
    (rec,) = records(tmp_path / "out")["train"]
    assert [b.xyxy for b in rec.bbox_info] == ([pytest.approx((0.1, 0.1, 0.5, 0.5))] if kept else [])


def test_output_inside_the_source_folder_is_refused(tmp_path, capsys):
    root = photos(tmp_path / "p")
    assert cli("folder", root, "--out", root / "imported") == 2
    one_line_error(capsys, "is inside the source folder")
    assert not (root / "imported").exists()
