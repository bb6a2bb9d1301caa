"""FG-Shapes: determinism, the FineHARD layout, captions and single-attribute hard negatives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import pytest
from PIL import Image

from fgclip_data import FineHARDDataset, read_records
from fgclip_data.cli import main
from fgclip_data.fgshapes.generate import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    GenerateOptions,
    generate,
    make_scene,
    position_describes,
    records_for,
)


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_and_in_the_finehard_layout(tmp_path):
    a = generate(tmp_path / "a", GenerateOptions(n=30, seed=3, workers=2))
    generate(tmp_path / "b", GenerateOptions(n=30, seed=3, workers=1))
    generate(tmp_path / "c", GenerateOptions(n=30, seed=4, workers=1))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # worker count does not matter
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert a["counts"] == {"train": 27, "val": 3}
    refs = read_records(tmp_path / "a" / "jsonfiles" / "train")
    assert len(refs) == 27
    first = refs[0].record
    assert first.f_path == "grit-20m/data-12m/coyo_image_0/00000/fgs00000000.jpg"
    image = Image.open(tmp_path / "a" / "grit-12m" / "coyo_image_0" / "00000" / "fgs00000000.jpg")
    assert 64 <= image.width <= 224 and 64 <= image.height <= 224
    # the shared dataset reads it without a single problem
    data = FineHARDDataset(tmp_path / "a" / "jsonfiles" / "val", tmp_path / "a" / "grit-12m")
    assert all(type(data[i]).__name__ == "Sample" for i in range(len(data))) and data.report.skipped == 0


def _attributes(phrase: str) -> tuple[str, str, str, str]:
    words = phrase.split(" ", 3)  # "a {size} {color} {shape} {position...}"
    shape, position = words[3].split(" ", 1)
    return words[1], words[2], shape, position


RELATIONS = ("to the left of", "to the right of", "above", "below")


def _centre(xyxy) -> tuple[float, float]:
    return (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2


def _detail_level(box, rec) -> str:
    """Which description of ``box`` its ``long_expr`` is (asserting it is true of the box): everything, relation,
    name, size or position."""
    long_expr, short_expr = box.long_expr, box.short_expr
    size, color, shape, position = _attributes(short_expr)
    name = f"{color} {shape}"
    article = "an" if color[0] in "aeiou" else "a"
    forms = {
        f"{article} {name}": "name",
        f"a {size} {name}": "size",
        f"{article} {name} {position}": "position",
    }
    if long_expr in forms:
        return forms[long_expr]
    prefix = f"{short_expr} of the image, " if long_expr.startswith(f"{short_expr} of the image, ") else f"the {name} "
    assert long_expr.startswith(prefix), long_expr
    rest = long_expr[len(prefix) :]
    rel = next(r for r in RELATIONS if rest.startswith(r + " the "))
    other = next(b for b in rec.bbox_info if " ".join(b.short_expr.split()[2:4]) == rest[len(rel + " the ") :])
    (ax, ay), (bx, by) = _centre(box.xyxy), _centre(other.xyxy)
    assert {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}[rel]
    return "everything" if prefix.startswith(short_expr) else "relation"


def test_captions_boxes_and_hard_negatives(tmp_path):
    """Every box: a true short caption with its four attributes, a second true caption at one of five levels of
    detail (all used), 10 negatives each changing exactly one attribute (all four kinds used)."""
    generate(tmp_path, GenerateOptions(n=400, seed=0, workers=1))
    levels = Counter()
    for ref in read_records(tmp_path / "jsonfiles" / "train"):
        rec = ref.record
        assert 2 <= len(rec.bbox_info) <= 4
        for box in rec.bbox_info:
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            size, color, shape, position = _attributes(box.short_expr)
            assert size in SIZES and color in COLORS and shape in SHAPES
            assert position in {p for p, _ in POSITIONS.values()}
            assert box.short_expr in rec.caption  # the long caption describes every object
            assert f"{color} {shape}" in rec.short_caption
            levels[_detail_level(box, rec)] += 1
            negatives = box.negatives
            assert len(negatives) == 10 and len(set(negatives)) == 10 and box.short_expr not in negatives
            changed_kinds = set()
            for neg in negatives:
                diff = [
                    i
                    for i, (a, b) in enumerate(zip(_attributes(neg), _attributes(box.short_expr), strict=True))
                    if a != b
                ]
                assert len(diff) == 1, (neg, box.short_expr)  # exactly one attribute swapped
                changed_kinds.add(diff[0])
                others = {b.short_expr for b in rec.bbox_info if b is not box}
                assert neg not in others  # never the true description of another object
            assert changed_kinds == {0, 1, 2, 3}  # colour, shape, size and position all used
    assert set(levels) == {"everything", "relation", "name", "size", "position"}
    share = levels["name"] / sum(levels.values())  # drawn 3 in 7
    assert 0.36 < share < 0.5 and all(0.08 < n / sum(levels.values()) < 0.22 for k, n in levels.items() if k != "name")


def test_no_negative_still_describes_its_object(tmp_path):
    """A position rewrite must be false of the box: "on the left" is true of an object in the bottom left, so it
    is never a negative there (the side phrases name a whole row or column; the corners and the centre a cell)."""
    cell_of = {phrase: cell for cell, (phrase, _) in POSITIONS.items()}
    generate(tmp_path, GenerateOptions(n=300, seed=3, workers=1, val_fraction=0.0))
    checked = side_cases = 0
    for ref in read_records(tmp_path / "jsonfiles" / "train"):
        for box in ref.record.bbox_info:
            row, col = cell_of[_attributes(box.short_expr)[3]]  # the cell of the box centre (tested above)
            true_phrases = {"on the left"} if col == 0 else {"on the right"} if col == 2 else set()
            true_phrases |= {"at the top"} if row == 0 else {"at the bottom"} if row == 2 else set()
            true_phrases.add(POSITIONS[(row, col)][0])
            for neg in box.negatives:
                position = _attributes(neg)[3]
                if _attributes(neg)[:3] != _attributes(box.short_expr)[:3]:
                    continue  # colour, shape or size changed: false whatever the position says
                assert position not in true_phrases, (box.short_expr, neg)
                assert position_describes(cell_of[position], (row, col)) == (position in true_phrases)
                checked += 1
            side_cases += (row, col) in {(0, 0), (0, 2), (2, 0), (2, 2)}
    assert checked > 2000 and side_cases > 100  # corner objects (two excluded side phrases each) were exercised
    assert position_describes((1, 0), (2, 0)) and position_describes((0, 1), (0, 2))
    assert not position_describes((0, 0), (1, 0)) and not position_describes((1, 1), (0, 1))


def test_bilingual_flavour(tmp_path):
    manifest = generate(tmp_path, GenerateOptions(n=10, seed=0, lang="both", workers=1))
    assert set(manifest["jsonfiles"]) == {"train", "val", "train_cn", "val_cn"}
    zh = read_records(tmp_path / "jsonfiles" / "train_cn")
    en = read_records(tmp_path / "jsonfiles" / "train")
    assert len(zh) == len(en) == 9
    assert zh[0].record.chinese and not en[0].record.chinese
    assert zh[0].record.f_path == en[0].record.f_path
    assert "图形" in zh[0].record.caption and len(zh[0].record.bbox_info[0].negatives) == 10


def test_cli_generate_reuses_an_identical_set(tmp_path, capsys):
    assert main(["fgshapes", "generate", "--out", str(tmp_path), "--n", "12", "--seed", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "train images: 11" in out and "val images: 1" in out
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert main(["fgshapes", "generate", "--out", str(tmp_path), "--n", "12", "--seed", "1"]) == 0
    assert "reused" in capsys.readouterr().out and (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "manifest.json").read_text())["options"]["seed"] == 1


def test_a_rewritten_phrase_is_the_phrase_of_the_rewritten_shape():
    """``phrase(**changes)`` / ``phrase_zh(**changes)`` read the changed attributes without copying the shape: the
    same words as the phrase of a changed copy, for every single-attribute change; a non-attribute is refused."""
    _, shapes, _ = make_scene(3, GenerateOptions(n=10, workers=1))
    shape = shapes[0]
    changes = [{"color": c} for c in COLORS] + [{"shape": k} for k in SHAPES] + [{"size": z} for z in SIZES]
    changes += [{"position": p} for p in POSITIONS] + [{"color": "red", "size": "small"}, {}]
    for change in changes:
        copy = dataclasses.replace(shape, **change)
        assert shape.phrase(**change) == copy.phrase() and shape.phrase_zh(**change) == copy.phrase_zh()
    with pytest.raises(TypeError, match="box"):
        shape.phrase(box=(0, 0, 1, 1))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="min_size"):
        GenerateOptions(min_size=300, max_size=200)
    with pytest.raises(ValueError, match="lang"):
        GenerateOptions(lang="fr")


def test_hard_negative_win_rates_by_changed_attribute():
    """Every generated rewrite changes exactly one attribute, which ``changed_attribute`` names; the win rates count
    the true caption beating (or tying) each rewrite, per attribute."""
    import torch

    from fgclip_data.fgshapes.tasks import changed_attribute, hard_negative_win_rates

    options = GenerateOptions(n=40, workers=1)
    seen = set()
    for index in range(40):
        _, shapes, background = make_scene(index, options)
        record = records_for(index, shapes, background, "x.jpg", 10)["en"]
        for box in record["bbox_info"]:
            for rewrite in box["short_expr_negs"].values():
                kind = changed_attribute(box["short_expr"], rewrite)
                assert kind in ("color", "shape", "size", "position"), (box["short_expr"], rewrite)
                seen.add(kind)
    assert seen == {"color", "shape", "size", "position"}
    assert changed_attribute("a small red circle on the left", "a large blue circle on the left") is None
    assert changed_attribute("a small red circle on the left", "a small red circle in the top left") == "position"
    assert changed_attribute("a red circle", "a blue circle") is None
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.5], [0.2, 0.1, 0.3, 0.0]])
    kinds = [["shape", "color", "shape"], ["color", "shape", "size"]]
    rates = hard_negative_win_rates(scores, kinds)
    assert rates == {"color": 1.0, "shape": 1 / 3, "size": 1.0}
