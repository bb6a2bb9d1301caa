"""``fgclip-data import``: every source layout imported from a small sample written by the test in its real layout,
read back by the project's FineHARD reader and dataset; the split; the caption rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _import_samples import by_path, cli, coco_sample, image, jpeg_bytes, records, samples, write_img2dataset_shard

from fgclip_data.importers import SOURCES, ImportOptions, choose_captions, run_import
from fgclip_data.importers.engine import split_of


def test_registry_lists_every_source():
    assert set(SOURCES) == {"folder", "table", "imagefolder", "coco", "odvg", "webdataset"}


# ------------------------------------------------------------------------------------------------- captions


def test_caption_rule():
    assert choose_captions(["A red car. It is parked."]) == ("A red car. It is parked.", "A red car")
    assert choose_captions(["a dog runs", "A brown dog on grass."]) == (
        "a dog runs. A brown dog on grass.",
        "a dog runs",
    )
    assert choose_captions(["long text. more"], short="explicit") == ("long text. more", "explicit")
    assert choose_captions(["  ", ""]) == ("", "")
    assert choose_captions(["one\nline  here"]) == ("one line here", "one line here")


# --------------------------------------------------------------------------------------------------- folder


def folder_sample(root: Path) -> Path:
    image(root / "a.jpg", seed=1)
    (root / "a.txt").write_text("A cat on a mat. The mat is blue.")
    image(root / "b.png", size=(100, 50), seed=2)
    (root / "b.txt").write_text("Two red balls.")
    (root / "b.json").write_text(
        json.dumps(
            {
                "boxes": [
                    {"bbox": [10, 5, 60, 45], "phrase": "a red ball"},
                    {"bbox": [0.5, 0.1, 0.9, 0.9], "phrase": "a small red ball"},
                ]
            }
        )
    )
    image(root / "sub" / "c.jpg", seed=3)
    (root / "sub" / "c.txt").write_text("A tree.")
    image(root / "sub" / "d.jpg", seed=4)
    (root / "sub" / "d.json").write_text(json.dumps({"caption": "A lamp.", "short_caption": "lamp"}))
    return root


def test_folder_import(tmp_path, capsys):
    src = folder_sample(tmp_path / "photos")
    assert cli("folder", src, "--out", tmp_path / "out", "--val-size", 1) == 0
    printed = capsys.readouterr().out
    assert "train records: 3" in printed and "val records: 1" in printed
    got = by_path(tmp_path / "out")
    assert set(got) == {"a.jpg", "b.png", "sub/c.jpg", "sub/d.jpg"}
    assert got["a.jpg"].caption == "A cat on a mat. The mat is blue." and got["a.jpg"].short_caption == "A cat on a mat"
    assert got["sub/d.jpg"].short_caption == "lamp"
    b = got["b.png"]
    # the first box (pixels: the whole record's boxes are pixels, as one coordinate exceeds 1) -> normalised
    assert b.bbox_info[0].xyxy == pytest.approx((0.1, 0.1, 0.6, 0.9))
    assert b.bbox_info[0].short_expr == "a red ball" and len(b.bbox_info[0].negatives) >= 5
    assert all(s.image.size == (40, 30) or s.image.size == (100, 50) for s in samples(tmp_path / "out"))


def test_folder_record_with_normalised_boxes_keeps_them(tmp_path):
    root = tmp_path / "p"
    image(root / "x.jpg", size=(80, 40))
    (root / "x.txt").write_text("A blue cup.")
    (root / "x.json").write_text(json.dumps({"boxes": [{"bbox": [0.25, 0.5, 0.75, 1.0], "phrase": "a blue cup"}]}))
    run_import(SOURCES["folder"](root), tmp_path / "out", ImportOptions(val_size=0))
    (rec,) = records(tmp_path / "out")["train"]
    assert rec.bbox_info[0].xyxy == (0.25, 0.5, 0.75, 1.0)


# ---------------------------------------------------------------------------------------------------- tables


def _table_images(root: Path, n: int) -> list[str]:
    return [image(root / "imgs" / f"i{k}.jpg", seed=k).relative_to(root).as_posix() for k in range(n)]


def test_csv_with_open_clip_columns_groups_rows_of_one_image(tmp_path):
    paths = _table_images(tmp_path, 3)
    rows = ["filepath,title"] + [f"{p},caption {k} of {p}" for p in paths for k in range(2)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    assert cli("table", tmp_path / "train.csv", "--out", tmp_path / "out", "--val-size", 0) == 0
    got = by_path(tmp_path / "out")
    assert set(got) == {"imgs/i0.jpg", "imgs/i1.jpg", "imgs/i2.jpg"}
    assert got["imgs/i1.jpg"].caption == "caption 0 of imgs/i1.jpg. caption 1 of imgs/i1.jpg."
    assert got["imgs/i1.jpg"].short_caption == "caption 0 of imgs/i1.jpg"


def test_csv_with_a_byte_order_mark(tmp_path):
    paths = _table_images(tmp_path, 1)
    (tmp_path / "excel.csv").write_bytes(f"\ufefffilepath,title\n{paths[0]},a caption\n".encode())
    assert cli("table", tmp_path / "excel.csv", "--out", tmp_path / "out", "--val-size", 0) == 0
    assert by_path(tmp_path / "out")["imgs/i0.jpg"].caption == "a caption"


def test_tsv_and_named_columns(tmp_path):
    paths = _table_images(tmp_path, 2)
    lines = ["img\tlong\tshort\tboxes"]
    box = json.dumps(
        [
            {
                "bbox": [0.1, 0.1, 0.5, 0.5],
                "phrase": "a wooden chair",
                "negatives": ["a metal chair", "a wooden chair", ""],
            }
        ]
    )
    lines += [f"{p}\tA long text about {p}.\tshort {p}\t{box}" for p in paths]
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    code = cli(
        "table", tmp_path / "t.tsv", "--image-key", "img", "--caption-key", "long", "--short-caption-key", "short",
        "--boxes-key", "boxes", "--out", tmp_path / "out", "--val-size", 0,
    )  # fmt: skip
    assert code == 0
    rec = by_path(tmp_path / "out")["imgs/i0.jpg"]
    assert rec.short_caption == "short imgs/i0.jpg"
    # supplied negatives replace generated ones; the one equal to the phrase and the empty one are dropped
    assert rec.bbox_info[0].negatives == ["a metal chair"]


def test_jsonl_and_parquet_tables(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    paths = _table_images(tmp_path, 4)
    rows = [{"filepath": p, "title": [f"first {p}", f"second {p}"]} for p in paths]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.parquet"):
        out = tmp_path / f"out-{name}"
        assert cli("table", tmp_path / name, "--out", out, "--val-size", 0.25) == 0
        found = records(out)
        assert len(found["train"]) == 3 and len(found["val"]) == 1
        assert all(r.caption.startswith("first ") and r.short_caption.startswith("first ") for r in found["train"])


def test_transformers_imagefolder_layout(tmp_path):
    root = tmp_path / "ds"
    image(root / "train" / "x.jpg", seed=1)
    image(root / "train" / "y.jpg", seed=2)
    image(root / "validation" / "z.jpg", seed=3)
    (root / "train" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "x.jpg", "text": "an x"})
        + "\n"
        + json.dumps({"file_name": "y.jpg", "text": "a y"})
        + "\n"
    )
    (root / "validation" / "metadata.csv").write_text("file_name,text\nz.jpg,a zed\n")
    assert cli("imagefolder", root, "--out", tmp_path / "out", "--val-size", 0) == 0
    got = by_path(tmp_path / "out")
    assert {k: v.caption for k, v in got.items()} == {
        "train/x.jpg": "an x",
        "train/y.jpg": "a y",
        "validation/z.jpg": "a zed",
    }
    assert len(samples(tmp_path / "out")) == 3


def test_imagefolder_objects_column_is_coco_pixels(tmp_path):
    root = tmp_path / "ds"
    image(root / "x.jpg", size=(100, 50))
    row = {"file_name": "x.jpg", "text": "a dog", "objects": {"bbox": [[10, 10, 40, 20]], "categories": ["dog"]}}
    (root / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    run_import(SOURCES["imagefolder"](root), tmp_path / "out", ImportOptions(val_size=0))
    (rec,) = records(tmp_path / "out")["train"]
    assert rec.bbox_info[0].xyxy == pytest.approx((0.1, 0.2, 0.5, 0.6))


# ------------------------------------------------------------------------------------------------------ COCO


def test_coco_captions_and_instances(tmp_path, capsys):
    s = coco_sample(tmp_path / "coco")
    code = cli("coco", "--images", s["images"], "--captions", s["captions"], "--instances", s["instances"],
               "--out", tmp_path / "out", "--val-size", 0)  # fmt: skip
    assert code == 0
    assert "crowd annotation (a group, not one object) skipped: 1" in capsys.readouterr().out
    got = by_path(tmp_path / "out")
    first = got["000000000000.jpg"]
    assert first.short_caption == "Caption 0 of image 0"
    assert first.caption == " ".join(f"Caption {k} of image 0." for k in range(5))
    dog, cat = first.bbox_info
    assert dog.short_expr == "dog" and dog.xyxy == pytest.approx((0.1, 0.1, 0.6, 0.6))
    assert dog.long_expr == "a dog in the center of the image"
    assert cat.xyxy == pytest.approx((0.5, 0.5, 1.0, 1.0))
    # category swaps: other categories of the set, never the same one, one of two synonyms (sofa / couch);
    # cat (in the image) comes last
    assert len(dog.negatives) == 4 and dog.negatives[-1] == "cat"
    assert set(dog.negatives) - {"sofa", "couch"} == {"car", "apple", "cat"}
    sofa = got["000000000001.jpg"].bbox_info[0]
    assert "couch" not in sofa.negatives and "sofa" not in sofa.negatives
    built = samples(tmp_path / "out")
    assert sum(len(s.boxes) for s in built) == 3


def test_coco_instances_only_makes_captions_from_categories(tmp_path):
    s = coco_sample(tmp_path / "coco", n=2)
    run_import(SOURCES["coco"](s["images"], instances=s["instances"]), tmp_path / "out", ImportOptions(val_size=0))
    got = by_path(tmp_path / "out")
    assert got["000000000000.jpg"].caption == "a dog and a cat"
    assert got["000000000001.jpg"].caption == "a sofa"


# ------------------------------------------------------------------------------------------------------ ODVG


def test_odvg_grounding_and_detection(tmp_path):
    root = tmp_path / "imgs"
    image(root / "g.jpg", size=(100, 100), seed=1)
    image(root / "d.jpg", size=(200, 100), seed=2)
    lines = [
        {"filename": "g.jpg", "height": 100, "width": 100,
         "grounding": {"caption": "a man in a red shirt next to a white dog",
                       "regions": [{"bbox": [10, 10, 50, 90], "phrase": "a man in a red shirt"},
                                   {"bbox": [[60, 50, 90, 90]], "phrase": "a white dog"}]}},
        {"filename": "d.jpg", "height": 100, "width": 200,
         "detection": {"instances": [{"bbox": [0, 0, 100, 50], "label": 0, "category": "person"},
                                     {"bbox": [100, 50, 200, 100], "label": 1},
                                     {"bbox": [20, 20, 60, 60], "label": 1}]}},
    ]  # fmt: skip
    (tmp_path / "od.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "label_map.json").write_text(json.dumps({"0": "person", "1": "bicycle", "2": "umbrella"}))
    code = cli("odvg", tmp_path / "od.jsonl", "--images", root, "--label-map", tmp_path / "label_map.json",
               "--out", tmp_path / "out", "--val-size", 0)  # fmt: skip
    assert code == 0
    got = by_path(tmp_path / "out")
    g = got["g.jpg"]
    assert g.caption == "a man in a red shirt next to a white dog"
    assert [b.short_expr for b in g.bbox_info] == ["a man in a red shirt", "a white dog"]
    assert g.bbox_info[1].xyxy == pytest.approx((0.6, 0.5, 0.9, 0.9))
    assert "a man in a blue shirt" in g.bbox_info[0].negatives or any("shirt" in n for n in g.bbox_info[0].negatives)
    d = got["d.jpg"]
    assert d.caption == "a person and two bicycles"
    assert d.bbox_info[1].short_expr == "bicycle" and d.bbox_info[1].xyxy == pytest.approx((0.5, 0.5, 1.0, 1.0))
    assert "umbrella" in d.bbox_info[0].negatives and "bicycle" in d.bbox_info[0].negatives
    assert len(samples(tmp_path / "out")) == 2


# ------------------------------------------------------------------------------------------------ WebDataset


def test_webdataset_tars_from_img2dataset(tmp_path, capsys):
    write_img2dataset_shard(tmp_path / "shards" / "00000.tar", 0, 3, failed=1)
    write_img2dataset_shard(tmp_path / "shards" / "00001.tar", 3, 2)
    assert cli("webdataset", tmp_path / "shards", "--out", tmp_path / "out", "--val-size", 0) == 0
    assert "sample without an image (failed download?): 1" in capsys.readouterr().out
    got = by_path(tmp_path / "out")
    assert set(got) == {"00000/000000000.jpg", "00000/000000002.jpg", "00001/000000003.jpg", "00001/000000004.jpg"}
    assert (
        got["00001/000000004.jpg"].caption == "Sample 4. A photo."
        and got["00001/000000004.jpg"].short_caption == "Sample 4"
    )
    assert (tmp_path / "out" / "images" / "00001" / "000000004.jpg").read_bytes() == jpeg_bytes(seed=4)
    assert len(samples(tmp_path / "out")) == 4


# ------------------------------------------------------------------------------------------------------ split


def test_split_is_seeded_disjoint_and_sized(tmp_path):
    keys = [f"k{i}" for i in range(100)]
    a, b, c = split_of(keys, 0.2, 0), split_of(keys, 0.2, 0), split_of(keys, 0.2, 1)
    assert a == b and a != c and a.count("val") == 20 and split_of(keys, 7, 0).count("val") == 7
    root = tmp_path / "p"
    for i in range(12):
        image(root / f"x{i}.jpg", seed=i)
        (root / f"x{i}.txt").write_text(f"caption {i}")
    outs = []
    for name, seed in (("o1", 3), ("o2", 3), ("o3", 4)):
        run_import(SOURCES["folder"](root), tmp_path / name, ImportOptions(val_size=4, seed=seed, chunk_size=5))
        found = records(tmp_path / name)
        train, val = {r.f_path for r in found["train"]}, {r.f_path for r in found["val"]}
        assert len(val) == 4 and len(train) == 8 and not train & val
        outs.append(val)
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_box_categories_of_a_folder_or_table_feed_category_swaps(tmp_path):
    root = tmp_path / "p"
    for k, name in enumerate(["dog", "cat", "bus"]):
        image(root / f"x{k}.jpg", seed=k)
        (root / f"x{k}.json").write_text(
            json.dumps(
                {"caption": f"a {name}", "boxes": [{"bbox": [0.1, 0.1, 0.9, 0.9], "phrase": name, "category": name}]}
            )
        )
    run_import(SOURCES["folder"](root), tmp_path / "out", ImportOptions(val_size=0))
    got = by_path(tmp_path / "out")
    assert sorted(got["x0.jpg"].bbox_info[0].negatives) == ["bus", "cat"]
    rows = [
        {"file_name": f"x{k}.jpg", "text": "t", "objects": {"bbox": [[1, 1, 10, 10]], "categories": [n]}}
        for k, n in enumerate(["dog", "cat"])
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run_import(SOURCES["imagefolder"](root), tmp_path / "out2", ImportOptions(val_size=0))
    assert by_path(tmp_path / "out2")["x0.jpg"].bbox_info[0].negatives == ["cat"]


def test_chinese_captions(tmp_path):
    root = tmp_path / "p"
    image(root / "x.jpg")
    (root / "x.txt").write_text("一只红色的猫坐在垫子上。它很可爱。")
    boxes = [{"bbox": [0.1, 0.1, 0.5, 0.5], "phrase": "一只猫", "category": "猫"}]
    (root / "x.json").write_text(json.dumps({"boxes": boxes}, ensure_ascii=False))
    image(root / "y.jpg", seed=1)
    (root / "y.json").write_text(
        json.dumps(
            {"caption": "狗", "boxes": [{"bbox": [0, 0, 1, 1], "phrase": "狗", "category": "狗"}]}, ensure_ascii=False
        )
    )
    assert cli("folder", root, "--chinese", "--out", tmp_path / "out", "--val-size", 0) == 0
    rec = by_path(tmp_path / "out")["x.jpg"]
    assert rec.chinese and rec.short_caption == "一只红色的猫坐在垫子上"
    assert rec.bbox_info[0].negatives == ["一只狗"]  # the category swapped inside the Chinese phrase
    assert choose_captions(["一只猫", "两只狗。"]) == ("一只猫。 两只狗。", "一只猫")
