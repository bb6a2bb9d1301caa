"""``fgclip-model embed`` / ``search`` (fgclip_model.embed) on the golden tiny models and generated JPEGs: every
input kind, the files against direct model calls, ranks, resuming after a kill, mismatches refused, search on a
planted row (exact, faiss, a prebuilt index), the CLIs' one-line errors."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fgclip_model
from fgclip_model.cli import main as cli_main
from fgclip_model.embed import EmbedConfig, embed, writer
from fgclip_model.embed.search import Searcher, exact_topk

pq = pytest.importorskip("pyarrow.parquet", reason="the [embed] extra is not installed")

MODELS = {"fgclip": "v1_s0", "fgclip2": "v2_s1_fixed"}
SIZES = [(64, 48), (80, 64), (40, 96), (64, 64), (120, 90), (56, 72), (96, 40)]
WORDS = ["red square", "blue circle", "green triangle", "small red circle", "big blue square", "two circles",
         "a photo of a triangle"]  # fmt: skip


@pytest.fixture(scope="module")
def models(golden, gemma_like_tokenizer, clip_tokenizer, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for family, name in MODELS.items():
        folder = tmp_path_factory.mktemp(family) / "model"
        shutil.copytree(golden / name / "model", folder)
        (gemma_like_tokenizer if family == "fgclip2" else clip_tokenizer).save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """7 JPEGs of different sizes with sidecar captions, and one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.jpg", quality=90)
        (folder / f"im{i}.txt").write_text(WORDS[i])
    (folder / "zz_bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "zz_bad.txt").write_text("broken")
    return folder


def _run(model, input_, out, **kw) -> object:
    kw = {"part_size": 3, "batch_size": 2, "workers": 0, "progress": False, **kw}
    return embed(EmbedConfig(model=str(model), input=str(input_), out=str(out), **kw))


def _rows(out: Path, kind: str = "img_emb", meta: str = "metadata") -> tuple[np.ndarray, list[dict]]:
    """All finished rows of a folder, concatenated in sorted file order (as autofaiss and clip-retrieval read)."""
    arrays = [np.load(p) for p in sorted((out / kind).glob("*.npy"))]
    metadata = [r for p in sorted((out / meta).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return np.concatenate(arrays), metadata


def _by_key(array: np.ndarray, metadata: list[dict]) -> dict[str, np.ndarray]:
    return {m["key"]: row for m, row in zip(metadata, array, strict=True)}


# --------------------------------------------------------------------------------------------------- light import


def test_import_fgclip_model_does_not_import_pyarrow_or_faiss():
    names = ("pyarrow", "faiss", "fgclip_model.embed")
    code = f"import sys, fgclip_model; print(sorted(m for m in {names} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------- files and input kinds


@pytest.mark.parametrize("family", list(MODELS))
def test_folder_rows_are_the_models_embeddings_and_bad_images_are_listed(models, images, tmp_path, family):
    out = tmp_path / "out"
    result = _run(models[family], images, out, workers=1)  # decoded in a loader worker
    assert result.images == 7 and [k for k, _ in result.skipped] == ["zz_bad.jpg"]
    info = json.loads((out / "embed_info.json").read_text())
    assert info["family"] == family and info["normalised"] and info["items"] == 8 and info["parts"] == 3
    # clip-retrieval's names, zero-padded to the part count's digits, and the markers
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]
    assert sorted(p.name for p in (out / "text_emb").iterdir()) == [f"text_emb_{n}.npy" for n in range(3)]
    assert writer.done_parts(out) == [0, 1, 2] and not (out / "_tmp").exists()
    skipped = pq.read_table(out / "skipped" / "skipped_2.parquet").to_pylist()
    assert skipped[0]["key"] == "zz_bad.jpg" and "corrupt" in skipped[0]["reason"]

    array, metadata = _rows(out)
    texts, _ = _rows(out, "text_emb")
    assert array.shape == (7, info["dim"]) and texts.shape == array.shape
    assert [m["key"] for m in metadata] == [f"im{i}.jpg" for i in range(7)]
    assert metadata[3]["caption"] == WORDS[3] and Path(metadata[3]["image_path"]).is_file()
    model, processor = fgclip_model.load(models[family])
    naflex = {"per_image_budget": True} if family == "fgclip2" else {}
    with torch.no_grad():
        for i in (0, 4):
            inputs = processor(images=[Image.open(images / f"im{i}.jpg").convert("RGB")], **naflex)
            want = F.normalize(model.get_image_features(**inputs), dim=-1)[0]
            torch.testing.assert_close(torch.from_numpy(array[i]), want, atol=2e-5, rtol=0)
        tokens = processor(text=[WORDS[5]], walk_type="short")
        want = F.normalize(model.get_text_features(tokens["input_ids"], tokens.get("attention_mask")), dim=-1)[0]
        torch.testing.assert_close(torch.from_numpy(texts[5]), want, atol=2e-5, rtol=0)


def _write_tables(images: Path, folder: Path) -> dict[str, Path]:
    rows = [{"image_path": f"im{i}.jpg", "caption": WORDS[i], "url": f"http://x/{i}"} for i in range(7)]
    out = {}
    for name, delim in (("t.csv", ","), ("t.tsv", "\t")):
        with (folder / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delim)
            w.writeheader()
            w.writerows(rows)
        out[name] = folder / name
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), folder / "t.parquet")
    out.update({"t.jsonl": folder / "t.jsonl", "t.parquet": folder / "t.parquet"})
    return out


def _write_tar(images: Path, path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(7):
            tar.add(images / f"im{i}.jpg", arcname=f"{i:05d}.jpg")
            tar.add(images / f"im{i}.txt", arcname=f"{i:05d}.txt")
            meta = path.parent / f"{i:05d}.json"
            meta.write_text(json.dumps({"url": f"http://x/{i}", "width": SIZES[i][0]}))
            tar.add(meta, arcname=f"{i:05d}.json")
    return path


def test_tables_and_webdataset_give_the_folders_rows(models, images, tmp_path):
    _run(models["fgclip"], images, tmp_path / "folder")
    ref = {k.removesuffix(".jpg"): v for k, v in _by_key(*_rows(tmp_path / "folder")).items()}
    for name, table in _write_tables(images, tmp_path).items():
        out = tmp_path / name.replace(".", "_")
        _run(models["fgclip"], table, out, image_root=str(images))
        array, metadata = _rows(out)
        assert [m["url"] for m in metadata] == [f"http://x/{i}" for i in range(7)], name
        assert [m["caption"] for m in metadata] == WORDS
        for m, row in zip(metadata, array, strict=True):
            np.testing.assert_array_equal(row, ref[m["key"].removesuffix(".jpg")], err_msg=name)
    out = tmp_path / "tar"
    _run(models["fgclip"], _write_tar(images, tmp_path / "shard-000.tar"), out)
    array, metadata = _rows(out)
    assert [m["key"] for m in metadata] == [f"shard-000/{i:05d}" for i in range(7)]
    assert metadata[2]["url"] == "http://x/2" and metadata[2]["width"] == SIZES[2][0]
    assert metadata[2]["caption"] == WORDS[2] and metadata[2]["shard"].endswith("shard-000.tar")
    for i, row in enumerate(array):
        np.testing.assert_array_equal(row, ref[f"im{i}"])


def _finehard(images: Path, folder: Path, as_array: bool = True) -> Path:
    records = [
        {
            "f_path": f"im{i}.jpg",
            "caption": f"a long caption about {WORDS[i]}",
            "short_caption": WORDS[i],
            "bbox_info": [
                {"bbox": [0.1, 0.2, 0.6, 0.7], "short_expr": "a red square"},
                {"bbox": [0.5, 0.0, 1.0, 0.5, 0.9], "short_expr": "a blue circle"},
            ][: i % 3],
        }
        for i in range(7)
    ]
    path = folder / ("records.json" if as_array else "records.jsonl")
    path.write_text(json.dumps(records) if as_array else "".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("family", list(MODELS))
def test_finehard_records_give_one_region_row_per_box(models, images, tmp_path, family):
    out = tmp_path / "out"
    result = _run(models[family], _finehard(images, tmp_path, as_array=family == "fgclip"), out, image_root=str(images))
    assert result.images == 7 and result.regions == sum(i % 3 for i in range(7))
    regions, meta = _rows(out, "region_emb", "region_metadata")
    assert len(regions) == len(meta) == result.regions
    assert [(m["key"], m["region"]) for m in meta][:3] == [("im1.jpg", 0), ("im2.jpg", 0), ("im2.jpg", 1)]
    assert (meta[2]["x1"], meta[2]["y1"], meta[2]["x2"], meta[2]["y2"]) == (0.5, 0.0, 1.0, 0.5)
    assert meta[2]["caption"] == "a blue circle"
    model, processor = fgclip_model.load(models[family])
    image = Image.open(images / "im2.jpg").convert("RGB")
    naflex = {"per_image_budget": True} if family == "fgclip2" else {}
    boxes = [torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.5, 0.0, 1.0, 0.5]])]
    with torch.no_grad():
        want = model.get_image_region_features(**processor(images=[image], **naflex), boxes=boxes)[0]
    torch.testing.assert_close(torch.from_numpy(regions[1:3]), F.normalize(want, dim=-1), atol=2e-5, rtol=0)
    _, metadata = _rows(out)
    assert metadata[0]["caption"] == WORDS[0]  # the short caption by default


def test_text_file_gives_text_rows_only_and_fp16(models, tmp_path):
    (tmp_path / "q.txt").write_text("red square\n\nblue circle\ngreen triangle\n")
    out = tmp_path / "out"
    result = _run(models["fgclip2"], tmp_path / "q.txt", out, fp16=True)
    assert result.texts == 3 and not (out / "img_emb").exists()
    texts, metadata = _rows(out, "text_emb")
    assert texts.dtype == np.float16
    assert [m["caption"] for m in metadata] == ["red square", "blue circle", "green triangle"]
    assert json.loads((out / "embed_info.json").read_text())["dtype"] == "float16"
    np.testing.assert_allclose(np.linalg.norm(texts.astype(np.float32), axis=1), 1.0, atol=2e-3)


# ------------------------------------------------------------------------------------------ ranks and resuming


def _cli(args: list[str], **env) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}, **env}
    command = [sys.executable, "-m", "fgclip_model.cli", "embed", "--no-progress", "--workers", "0", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _forked(env: dict[str, str], *args, **kw) -> multiprocessing.Process:
    """``_run(*args, **kw)`` in a forked process with ``env`` set (the modules are already imported: no start-up
    cost); its exit code is the run's (a fault hook exits as a kill would)."""

    def child() -> None:
        os.environ.update(env)
        torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool (it can hang)
        _run(*args, **kw)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    return process


@pytest.fixture
def one_thread():
    """The parent computes with one thread too: the same float reduction order as the forked children, so their
    files can be compared byte for byte."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _files(out: Path) -> dict[str, bytes]:
    """Every output file, by path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _check_two_ranks(one: Path, two: Path) -> None:
    assert _files(one) == _files(two)  # the same files, byte for byte
    a, _ = _rows(one)
    b, mb = _rows(two)
    np.testing.assert_array_equal(a, b[np.argsort([m["key"] for m in mb])])


def test_two_ranks_write_what_one_rank_writes(models, images, tmp_path, one_thread):
    one, two = tmp_path / "one", tmp_path / "two"
    ranks = [_forked({"RANK": str(r), "WORLD_SIZE": "2"}, models["fgclip2"], images, two, part_size=2) for r in (0, 1)]
    result = _run(models["fgclip2"], images, one, part_size=2)
    for process in ranks:
        process.join(timeout=300)
        assert process.exitcode == 0
    assert result.parts_written == [0, 1, 2, 3] and writer.done_parts(two) == [0, 1, 2, 3]
    _check_two_ranks(one, two)


@pytest.mark.slow
def test_two_rank_processes_started_like_torchrun_write_what_one_rank_writes(models, images, tmp_path):
    """The same through the CLI in two fresh interpreters (as torchrun starts them), at the same time."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--model", str(models["fgclip2"]), "--input", str(images), "--part-size", "2", "--batch-size", "2"]
    ranks = [_cli([*args, "--out", str(two)], RANK=str(r), WORLD_SIZE="2") for r in (0, 1)]
    _run(models["fgclip2"], images, one, part_size=2)
    for p in ranks:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    _check_two_ranks(one, two)


@pytest.mark.parametrize("fault", ["rename:1", "batch:3"])
def test_a_killed_run_resumes_to_the_same_files(models, images, tmp_path, fault, one_thread):
    """Killed after part 1's files are renamed into place but before its marker (a cut half-file is left too),
    or in the middle of part 1's batches: the resumed run skips part 0 and redoes the rest."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _run(models["fgclip"], images, clean)
    process = _forked({"FGCLIP_EMBED_FAULT": fault}, models["fgclip"], images, killed)
    process.join(timeout=300)
    assert process.exitcode == 17
    assert writer.done_parts(killed) == [0]
    if fault.startswith("rename"):
        assert (killed / "img_emb" / "img_emb_1.npy").is_file()
        (killed / "img_emb" / "img_emb_1.npy").write_bytes(b"half a file")  # as a cut write would leave it
    else:
        assert list((killed / "_tmp").rglob("*")) == [killed / "_tmp" / "rank0"]
    result = _run(models["fgclip"], images, killed)
    assert result.parts_already_done == [0] and result.parts_written == [1, 2]
    assert _files(killed) == _files(clean)


def test_resume_refuses_other_settings_or_models(models, images, tmp_path):
    out = tmp_path / "out"
    _run(models["fgclip"], images, out)
    for kw, field in (({"normalise": False}, "normalised"), ({"fp16": True}, "dtype"), ({"part_size": 4}, "part_size")):
        with pytest.raises(writer.MismatchError, match=field):
            _run(models["fgclip"], images, out, **kw)
    with pytest.raises(writer.MismatchError, match="family='fgclip'"):
        _run(models["fgclip2"], images, out)


# ------------------------------------------------------------------------------------------------------ search


@pytest.fixture(scope="module")
def planted(models, images, tmp_path_factory) -> dict:
    """FG-CLIP 2 embeddings of the images and records, with the query's own embedding planted as image row
    ``im4.jpg`` (short walk) and as region 1 of ``im5.jpg`` (box walk)."""
    out = tmp_path_factory.mktemp("planted") / "out"
    _run(models["fgclip2"], _finehard(images, out.parent), out, image_root=str(images))
    model, processor = fgclip_model.load(models["fgclip2"])
    query = "small red circle above two blue square"
    with torch.no_grad():
        walks = {}
        for walk in ("short", "box"):
            tokens = processor(text=[query], walk_type=walk)
            walks[walk] = F.normalize(model.get_text_features(**tokens, walk_type=walk), dim=-1)[0].numpy()
    assert np.dot(walks["short"], walks["box"]) < 0.99  # the walks differ: using the wrong one would show
    for kind, meta, key, region, walk in (
        ("img_emb", "metadata", "im4.jpg", None, "short"),
        ("region_emb", "region_metadata", "im5.jpg", 1, "box"),
    ):
        for part_file in sorted((out / kind).glob("*.npy")):
            rows = pq.read_table(out / meta / part_file.name.replace(kind, meta).replace(".npy", ".parquet"))
            for n, m in enumerate(rows.to_pylist()):
                if m["key"] == key and m.get("region") == region:
                    array = np.load(part_file)
                    array[n] = walks[walk]
                    np.save(part_file, array)
    return {"out": out, "query": query, "model": model}


@pytest.mark.parametrize("use_faiss", [False, True])
def test_search_finds_the_planted_image_and_region(planted, use_faiss):
    if use_faiss:
        pytest.importorskip("faiss")
    searcher = Searcher(planted["out"], use_faiss=use_faiss)
    hits = searcher.search(planted["query"], k=3)
    assert hits[0].metadata["key"] == "im4.jpg" and hits[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [0, 1, 2] and hits[0].score > hits[1].score
    model = planted["model"]  # FG-CLIP 2 scores: sigmoid(exp(logit_scale) * cos + logit_bias)
    want = torch.sigmoid(model.logit_scale.exp() * hits[1].cosine + model.logit_bias).item()
    assert hits[1].score == pytest.approx(want, rel=1e-5)
    regions = searcher.search(planted["query"], k=2, regions=True)
    assert (regions[0].metadata["key"], regions[0].metadata["region"]) == ("im5.jpg", 1)
    assert regions[0].cosine == pytest.approx(1.0, abs=1e-5) and regions[0].metadata["x1"] == 0.5
    assert regions[0].score == pytest.approx(model.logit_scale_finegraind.exp().item() * regions[0].cosine, rel=1e-5)


def test_exact_search_equals_brute_force(planted):
    searcher = Searcher(planted["out"], use_faiss=False)
    queries = ["red square", "a photo of a triangle"]
    array, _ = _rows(planted["out"])
    q = searcher.embed_queries(queries)
    _, rows = exact_topk(searcher.image_files, q, 7)
    want = torch.from_numpy(array) @ q.T
    np.testing.assert_array_equal(rows.numpy(), want.T.argsort(dim=1, descending=True).numpy())


def test_index_built_over_img_emb_answers_like_exact_search(planted, tmp_path):
    """What clip-retrieval's index step does: one faiss index over the sorted img_emb/*.npy (autofaiss needs
    numpy < 2 today, so the index is built with faiss itself, as autofaiss would for a small set: flat IP)."""
    faiss = pytest.importorskip("faiss")
    array, _ = _rows(planted["out"])
    index = faiss.index_factory(array.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(array.astype(np.float32))
    faiss.write_index(index, str(tmp_path / "image.index"))
    hits = Searcher(planted["out"], use_faiss=True, index=tmp_path / "image.index").search(planted["query"], k=7)
    exact = Searcher(planted["out"], use_faiss=False).search(planted["query"], k=7)
    assert [h.metadata["key"] for h in hits] == [h.metadata["key"] for h in exact]


def test_search_refuses_another_model(models, planted):
    with pytest.raises(writer.MismatchError, match=r"fgclip2 embeddings of dim .* the query model is fgclip of dim"):
        Searcher(planted["out"], model=str(models["fgclip"]))


def test_search_cli_prints_hits_and_writes_a_contact_sheet(planted, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    sheet = tmp_path / "sheet.png"
    args = ["search", "--embeddings", str(planted["out"]), "--query", planted["query"], "-k", "2", "--regions"]
    assert cli_main([*args, "--show", str(sheet), "--no-faiss"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[4].startswith("im5.jpg box [0.500 0.000 1.000 0.500]")
    assert Image.open(sheet).size[0] > 400


# --------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_and_exit_2(models, images, tmp_path, capsys):
    (tmp_path / "nopath.csv").write_text("caption,url\na,b\n")
    (tmp_path / "badbox.jsonl").write_text(json.dumps({"f_path": "im0.jpg", "caption": "c", "short_caption": "c",
                                                       "bbox_info": [{"bbox": [0.5, 0.5, 0.2]}]}) + "\n")  # fmt: skip
    (tmp_path / "bad.tar").write_bytes(b"\0" * 100 + b"garbage")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "nopath.csv"): "no image path column",
        str(tmp_path / "badbox.jsonl"): "record 0: bbox_info.0.bbox",
        str(tmp_path / "bad.tar"): "bad.tar",
    }
    for input_, message in cases.items():
        code = cli_main(["embed", "--model", str(models["fgclip"]), "--input", input_, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (input_, err)
    code = cli_main(["search", "--embeddings", str(tmp_path), "--query", "x"])
    assert code == 2 and "embed_info.json" in capsys.readouterr().err
    out = tmp_path / "unnormalised"
    _run(models["fgclip"], images, out, normalise=False)
    code = cli_main(["search", "--embeddings", str(out), "--query", "x", "--faiss"])
    assert code == 2 and "not normalised" in capsys.readouterr().err


@pytest.mark.slow
def test_autofaiss_builds_an_index_that_search_uses(planted, tmp_path):
    """clip-retrieval's index step: autofaiss on ``img_emb/`` unchanged. autofaiss 2.18 needs numpy < 2 (and so
    pyarrow < 17), so it runs in its own environment made by uv (from its cache, or PyPI)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: cannot make autofaiss's numpy < 2 environment")
    pytest.importorskip("faiss")
    index = tmp_path / "image.index"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    command = [uv, "run", "--isolated", "--no-project", "--python", python,
               "--with", "autofaiss==2.18.0", "--with", "numpy<2", "--with", "pyarrow<17", "autofaiss", "build_index",
               f"--embeddings={planted['out'] / 'img_emb'}", f"--index_path={index}",
               f"--index_infos_path={tmp_path / 'infos.json'}", "--metric_type=ip",
               "--max_index_memory_usage=1G", "--current_memory_available=2G"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "infos.json").read_text())["nb vectors"] == 7
    hits = Searcher(planted["out"], use_faiss=True, index=index).search(planted["query"], k=7)
    exact = Searcher(planted["out"], use_faiss=False).search(planted["query"], k=7)
    assert [h.metadata["key"] for h in hits] == [h.metadata["key"] for h in exact]


@pytest.mark.parametrize(
    "backend",
    ["bf16", "auto", pytest.param("onnx", marks=pytest.mark.slow), pytest.param("compile", marks=pytest.mark.slow)],
)
def test_backends_give_the_eager_rows(models, images, tmp_path, monkeypatch, backend):
    from fgclip_model.backends import native_bf16

    if backend == "onnx":
        pytest.importorskip("onnxruntime")
        monkeypatch.setenv("FGCLIP_CACHE", str(tmp_path / "cache"))
    elif backend == "bf16" and not native_bf16("cpu"):
        pytest.skip("no native bf16 on this CPU: the bf16 backends are not meant for it")
    records = _finehard(images, tmp_path)
    _run(models["fgclip2"], records, tmp_path / "eager", image_root=str(images))
    _run(models["fgclip2"], records, tmp_path / backend, image_root=str(images), backend=backend)
    for kind, meta in (("img_emb", "metadata"), ("region_emb", "region_metadata")):
        want, _ = _rows(tmp_path / "eager", kind, meta)
        got, _ = _rows(tmp_path / backend, kind, meta)
        assert (want * got).sum(axis=1).min() > 0.999, kind  # cosine of unit rows


def test_without_the_extra_embed_says_which_to_install(models, images, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code = cli_main(["embed", "--model", str(models["fgclip"]), "--input", str(images), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and 'pip install "fgclip-model[embed]"' in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
