"""``benchmark-data``: ImageNet's flat val archive into synset folders, Flickr30k's Karpathy split into the test json,
torchvision downloads on request; and the full-Flickr30k task (Long-CLIP's protocol) on the official token file."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error

import pytest
import torchvision.datasets

from fgclip_eval.prepare import main
from fgclip_eval.tasks import TASKS, get_tasks

get_tasks(["all"])


def _tar(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_imagenet_val_archive_into_synset_folders_resumably(tmp_path, capsys):
    files = {
        "ILSVRC2012_val_00000001_n01751748.JPEG": b"one",
        "ILSVRC2012_val_00000002_n09193705.JPEG": b"two",
        "val/ILSVRC2012_val_00000003_n01751748.JPEG": b"three",
        "README.txt": b"not an image",
    }
    _tar(tmp_path / "val_images.tar.gz", files)
    root = tmp_path / "data"
    assert main(["--data-root", str(root), "--quiet", "imagenet", str(tmp_path / "val_images.tar.gz")]) == 0
    out = root / "imagenet" / "data" / "val_images"
    assert sorted(p.name for p in out.iterdir()) == ["n01751748", "n09193705"]
    assert (out / "n01751748" / "ILSVRC2012_val_00000003_n01751748.JPEG").read_bytes() == b"three"
    line = capsys.readouterr().out
    assert "3 written, 0 already in place" in line and "1 not named" in line and "2 of 1000 synset folders" in line
    assert main(["--data-root", str(root), "--quiet", "imagenet", str(tmp_path / "val_images.tar.gz")]) == 0
    assert "0 written, 3 already in place" in capsys.readouterr().out
    assert (tmp_path / "val_images.tar.gz").exists()  # the source is kept

    (out / "n09193705" / "ILSVRC2012_val_00000002_n09193705.JPEG").write_bytes(b"someone else's")
    assert main(["--data-root", str(root), "--quiet", "imagenet", str(tmp_path / "val_images.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert "exists with other content" in err and "n09193705" in err
    assert (out / "n09193705" / "ILSVRC2012_val_00000002_n09193705.JPEG").read_bytes() == b"someone else's"


def test_imagenet_truncated_archive_is_one_clear_line(tmp_path, capsys):
    _tar(tmp_path / "val.tar.gz", {"ILSVRC2012_val_00000001_n01751748.JPEG": b"x" * 10_000})
    data = (tmp_path / "val.tar.gz").read_bytes()
    (tmp_path / "val.tar.gz").write_bytes(data[: len(data) // 2])
    assert main(["--data-root", str(tmp_path), "--quiet", "imagenet", str(tmp_path / "val.tar.gz")]) == 2
    assert "not a readable (complete) tar archive" in capsys.readouterr().err
    assert main(["--data-root", str(tmp_path), "imagenet", str(tmp_path / "missing.tar.gz")]) == 2


def test_flickr30k_test_split_from_the_karpathy_file(tmp_path, capsys, files):
    write_text = files.write_text
    images = [
        {"filename": f"{k}.jpg", "split": split, "sentences": [{"raw": f"caption {k} {j}"} for j in range(6)]}
        for k, split in ((1, "train"), (2, "test"), (3, "val"), (4, "test"))
    ]
    write_text(tmp_path / "dataset_flickr30k.json", json.dumps({"images": images}))
    assert main(["--data-root", str(tmp_path), "flickr30k", str(tmp_path / "dataset_flickr30k.json")]) == 0
    test = json.loads((tmp_path / "flickr30k" / "flickr30k_test.json").read_text())
    assert [r["image"] for r in test] == ["flickr30k-images/2.jpg", "flickr30k-images/4.jpg"]
    assert test[0]["caption"] == [f"caption 2 {j}" for j in range(5)]
    write_text(tmp_path / "bad.json", '{"images": [{"file": 1, "split": "test"}]}')
    assert main(["--data-root", str(tmp_path), "flickr30k", str(tmp_path / "bad.json")]) == 2
    assert "not a Karpathy split file" in capsys.readouterr().err
    assert main(["--data-root", str(tmp_path), "flickr30k", str(tmp_path / "missing.json")]) == 2
    assert "does not exist (expected Karpathy's dataset_flickr30k.json)" in capsys.readouterr().err
    write_text(tmp_path / "other.json", json.dumps({"images": images[:1]}))  # no test image
    assert main(["--data-root", str(tmp_path / "elsewhere"), "flickr30k", str(tmp_path / "other.json")]) == 2
    assert "no image has split 'test'" in capsys.readouterr().err
    write_text(tmp_path / "dataset_flickr30k.json", json.dumps({"images": images[1:2]}))  # another test split
    assert main(["--data-root", str(tmp_path), "flickr30k", str(tmp_path / "dataset_flickr30k.json")]) == 2
    assert "exists with other content" in capsys.readouterr().err  # the earlier output is not overwritten


def test_download_is_torchvision_with_download_true(tmp_path, monkeypatch, capsys):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, download=False, train=True):
            calls.append((root, download, train))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    assert main(["--data-root", str(tmp_path), "download", "cifar10"]) == 0
    assert calls == [(str(tmp_path), True, False)]

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "DTD", offline)
    assert main(["--data-root", str(tmp_path), "download", "dtd"]) == 2
    assert "dtd: torchvision could not download DTD" in capsys.readouterr().err


def test_flickr30k_full_reads_the_official_token_file(tmp_path, fake, files):
    paint, write_text = files.paint, files.write_text
    lines = []
    for k in (41, 42, 43):
        paint(tmp_path / "flickr30k" / "flickr30k-images" / f"{k}.jpg", k)
        lines += [f"{k}.jpg#{j}\ta photo id{k if j else 99}" for j in range(5)]  # caption #0 names no image
    write_text(tmp_path / "flickr30k" / "results_20130124.token", "\n".join(lines) + "\n")
    result = TASKS["flickr30k-full"].run(fake(), tmp_path)
    assert result["i2t_r1"] == 1.0
    # the three '#0' captions tie over all images; softmax + topk takes the first image: only image 41's is a hit
    assert result["t2i_r1"] == pytest.approx(13 / 15)
    write_text(tmp_path / "flickr30k" / "results_20130124.token", "no tab here\n")
    with pytest.raises(ValueError, match=r"results_20130124\.token:1"):
        TASKS["flickr30k-full"].run(fake(), tmp_path)
