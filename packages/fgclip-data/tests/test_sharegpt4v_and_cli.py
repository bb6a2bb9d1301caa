"""ShareGPT4V records and check; every CLI command has --help; finehard check."""

from __future__ import annotations

import json

import pytest

from fgclip_data import FineHARDDataset, Report
from fgclip_data.cli import COMMANDS, main
from fgclip_data.schema import parse_record
from fgclip_data.sharegpt4v import first_sentence, iter_sharegpt4v, to_finehard


def _share(image: str, caption: str = "A cat sits on a mat. It is orange.\nThe mat is blue.") -> dict:
    return {
        "id": image,
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}],
    }


def test_records_and_captions(tmp_path):
    path = tmp_path / "share.json"
    path.write_text(
        json.dumps(
            [
                _share("coco/train2017/000000000009.jpg"),
                {"image": "x"},
                _share("sam/images/sa_1.jpg", "One sentence only."),
            ]
        )
    )
    report = Report()
    items = list(iter_sharegpt4v(path, report))
    assert [i.index for i in items] == [0, 2] and report.skipped == 1
    assert items[0].record.caption == "A cat sits on a mat. It is orange. The mat is blue."
    assert items[0].record.short_caption == "A cat sits on a mat"
    assert items[1].record.short_caption == "One sentence only"
    assert first_sentence("no period here") == "no period here"
    record = parse_record(to_finehard(items[0]))
    assert record.f_path == "coco/train2017/000000000009.jpg" and record.bbox_info == []


def test_check_reports_missing_images_by_source(tmp_path, make, capsys):
    data_root = tmp_path / "data"
    make.image(data_root / "coco/train2017/000000000009.jpg")
    make.image(data_root / "vg/VG_100K_2/1.jpg")
    path = tmp_path / "share.json"
    path.write_text(
        json.dumps(
            [
                _share("coco/train2017/000000000009.jpg"),
                _share("coco/train2017/000000000010.jpg"),
                _share("vg/VG_100K_2/1.jpg"),
                _share("mystery/1.jpg"),
                _share("sam/../../etc/passwd"),
            ]
        )
    )
    missing = tmp_path / "missing.txt"
    code = main(
        ["sharegpt4v", "check", "--json", str(path), "--data-root", str(data_root), "--missing-out", str(missing)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "missing image (coco): 1" in out and "unknown source folder 'mystery'" in out and "escape" in out
    assert "images found (coco): 1" in out and "images found (vg): 1" in out
    assert missing.read_text().splitlines() == [
        str(data_root / "coco/train2017/000000000010.jpg"),
        str(data_root / "mystery/1.jpg"),
    ]
    # the FineHARD datasets read converted records (short caption without the v1 "a photo of " prefix)
    from fgclip_data import SampleOptions
    from fgclip_data.finehard.reader import RecordRef
    from fgclip_data.sharegpt4v import iter_sharegpt4v as items

    refs = [RecordRef(str(path), i.index, parse_record(to_finehard(i))) for i in items(path)][:1]
    sample = FineHARDDataset(refs, data_root, options=SampleOptions(short_prefix=""))[0]
    assert sample.short_caption == "a cat sits on a mat"


def test_finehard_check_command(finehard, capsys):
    assert main(["finehard", "check", "--data", str(finehard["jsonfiles"]), "--images", str(finehard["images"])]) == 0
    assert "images ok: 8" in capsys.readouterr().out
    (finehard["images"] / "coyo_image_0/00000/k3.jpg").unlink()
    assert main(["finehard", "check", "--data", str(finehard["jsonfiles"]), "--images", str(finehard["images"])]) == 1
    assert "missing image: 1" in capsys.readouterr().out
    code = main(
        ["finehard", "check", "--strict", "--data", str(finehard["jsonfiles"]), "--images", str(finehard["images"])]
    )
    assert code == 2 and "part_000.json, record 3: missing image" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: fgclip-data" in capsys.readouterr().out


def test_convert_to_finehard_records(tmp_path, capsys):
    from fgclip_data import read_records

    path = tmp_path / "share.json"
    path.write_text(json.dumps([_share(f"coco/train2017/{i:012d}.jpg") for i in range(5)]))
    assert main(["sharegpt4v", "convert", "--json", str(path), "--out", str(tmp_path / "out"), "--val-size", "2"]) == 0
    assert "val records: 2" in capsys.readouterr().out
    val, train = read_records(tmp_path / "out" / "val.jsonl"), read_records(tmp_path / "out" / "train.jsonl")
    assert [r.record.f_path for r in val] == ["coco/train2017/000000000000.jpg", "coco/train2017/000000000001.jpg"]
    assert len(train) == 3 and train[0].record.short_caption == "A cat sits on a mat"
