"""FineHARD's image pipeline for real: img2dataset against a local HTTP server, then the url2key rename."""

from __future__ import annotations

import functools
import io
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fgclip_data import FineHARDDataset, Report
from fgclip_data.cli import main
from fgclip_data.finehard.rename import rename


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (a free port)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.slow  # real img2dataset downloads from a local server
def test_download_then_rename_end_to_end(tmp_path, server, make):
    www, base = server
    finehard = tmp_path / "FineHARD"
    mapping = {}
    for parent, count in ((0, 6), (1, 3)):
        urls = []
        for j in range(count):
            name = f"p{parent}_{j}.jpg"
            urls.append(f"{base}/{name}")
            mapping[f"{base}/{name}"] = f"KEY{parent}{j:03d}"
            if j == 1:
                continue  # a URL that 404s
            (www / name).write_bytes(b"garbage, not an image" if j == 2 else _jpeg(parent * 10 + j))
        folder = finehard / f"coyo_image_{parent}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"url": urls}), folder / "00000.parquet")
    (finehard / "url2key_jsons").mkdir()
    (finehard / "url2key_jsons" / "url2key_coyo_image_0.json").write_text(json.dumps(dict(list(mapping.items())[:6])))
    (finehard / "url2key_jsons" / "url2key_coyo_image_1.json").write_text(json.dumps(dict(list(mapping.items())[6:])))

    down = tmp_path / "down-grit-12m"
    argv = [
        "finehard",
        "download",
        "--finehard-root",
        str(finehard),
        "--out",
        str(down),
        "--processes",
        "1",
        "--threads",
        "4",
        "--timeout",
        "5",
    ]
    assert main(argv) == 0
    # img2dataset's "files" layout: a shard sub-folder per URL list, stats next to it
    assert (down / "coyo_image_0" / "00000" / "00000_stats.json").is_file()
    jpgs = sorted(p.name for p in down.rglob("*.jpg"))
    assert len(jpgs) == 5  # 9 URLs: 2 missing (404) and 2 corrupt files fail
    assert main(argv) == 0  # resumed: incremental mode leaves the finished shards alone
    assert sorted(p.name for p in down.rglob("*.jpg")) == jpgs

    out = tmp_path / "grit-12m"
    report = rename(finehard / "url2key_jsons", down, out)
    assert report.done["copied"] == 5 and report.done["mapped keys without a downloaded image"] == 4
    assert sorted(p.name for p in out.rglob("*.jpg")) == sorted(
        f"KEY{p}{j:03d}.jpg" for p, n in ((0, 6), (1, 3)) for j in range(n) if j not in (1, 2)
    )
    meta = json.loads((out / "coyo_image_0" / "00000" / "KEY0000.json").read_text())
    assert meta["key"] == "KEY0000" and meta["url"].endswith("p0_0.jpg")
    assert len(list(down.rglob("*.jpg"))) == 5  # sources untouched

    again = rename(finehard / "url2key_jsons", down, out)  # idempotent
    assert again.done["already present"] == 5 and "copied" not in again.done

    # the canonical tree is what the datasets read
    records = tmp_path / "records.json"
    records.write_text(json.dumps([make.record("KEY0000", f_path="grit-20m/data-12m/coyo_image_0/00000/KEY0000.jpg")]))
    data = FineHARDDataset(records, out)
    assert type(data[0]).__name__ == "Sample" and data[0].image.size == (60, 40)


def _fake_download(root, parent, sub, shard, key, url, status="success", image=b"img"):
    folder = root / parent / sub / shard
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.json").write_text(json.dumps({"url": url, "key": key, "status": status}))
    if status == "success":
        (folder / f"{key}.jpg").write_bytes(image)


def test_rename_reports_every_problem_and_never_overwrites(tmp_path, capsys):
    down, url2key, out = tmp_path / "down", tmp_path / "url2key", tmp_path / "out"
    url2key.mkdir()
    (url2key / "a.json").write_text(json.dumps({"u/1": "K1", "u/2": "../evil", "u/3": "K3", "u/4": "K4", "u/6": "K6"}))
    (url2key / "b.json").write_text(json.dumps({"u/1": "OTHER", "u/5": "K4"}))
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000000", "u/1")
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000001", "u/2")
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000002", "u/9")  # unmapped
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000003", "u/3", status="failed_to_download")
    _fake_download(down, "coyo_image_0", "00000", "00001", "000010000", "u/1")  # the same URL twice
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000004", "u/4")
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000005", "u/5")  # another URL onto key K4
    _fake_download(down, "coyo_image_0", "00000", "00000", "000000006", "u/6", image=b"new")
    (out / "coyo_image_0" / "00000").mkdir(parents=True)
    (out / "coyo_image_0" / "00000" / "K6.jpg").write_bytes(b"old")  # a different file is already there

    dry = rename(url2key, down, out, dry_run=True)
    assert dry.done["would copy"] == 2 and [p.name for p in out.rglob("*") if p.is_file()] == ["K6.jpg"]

    report = rename(url2key, down, out)
    assert report.done["copied"] == 2  # K1 and K4
    assert sorted(p.name for p in (out / "coyo_image_0" / "00000").iterdir()) == [
        "K1.jpg",
        "K1.json",
        "K4.jpg",
        "K4.json",
        "K6.jpg",
    ]
    assert (out / "coyo_image_0" / "00000" / "K6.jpg").read_bytes() == b"old"
    reasons = "\n".join(report.counts)
    for expected in (
        "two different keys",
        "not a plain file name",
        "unmapped",
        "downloaded twice",
        "same key",
        "other content",
    ):
        assert expected in reasons, expected
    assert report.done["failed downloads (failed_to_download)"] == 1

    assert main(["finehard", "rename", "--url2key", str(url2key), "--downloads", str(down), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "already present: 2" in printed and "not a plain file name" in printed


def test_rename_without_mapping_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "down").mkdir()
    assert (
        main(
            [
                "finehard",
                "rename",
                "--url2key",
                str(tmp_path / "none"),
                "--downloads",
                str(tmp_path / "down"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "no url2key JSON files" in capsys.readouterr().err
    assert Report().summary().endswith("problems: none")


def test_download_refuses_a_truncated_url_list_in_one_line(tmp_path):
    """A truncated URL-list parquet: one line naming it, exit 2, no traceback (img2dataset never starts, so none of
    its worker processes can print one); run as a user would, in a subprocess."""
    import subprocess
    import sys

    folder = tmp_path / "FineHARD" / "coyo_image_0"
    folder.mkdir(parents=True)
    full = tmp_path / "full.parquet"
    pq.write_table(pa.table({"url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(50)]}), full)
    data = full.read_bytes()
    (folder / "00000.parquet").write_bytes(data[: len(data) // 2])
    argv = ["finehard", "download", "--finehard-root", str(tmp_path / "FineHARD"), "--out", str(tmp_path / "down")]
    code = "import sys; from fgclip_data.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "00000.parquet: not a readable parquet URL list" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "down").exists()


def test_download_refuses_a_url_list_without_urls(tmp_path, capsys):
    from fgclip_data.cli import main

    folder = tmp_path / "FineHARD" / "coyo_image_0"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"link": ["http://x/1.jpg"]}), folder / "00000.parquet")
    argv = ["finehard", "download", "--finehard-root", str(tmp_path / "FineHARD"), "--out", str(tmp_path / "down")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no url column (columns: link)" in err
