"""Every public benchmark task on a tiny data set in its real layout, scored by a fake encoder whose features
are known: the expected figures are worked out by hand in the comments (conftest.py builds the files)."""

from __future__ import annotations

import pytest

from fgclip_eval.tasks import TASKS, MissingDataset, NotApplicable, get_tasks

get_tasks(["all"])  # registers every task module


def run(name, encoder, root):
    return TASKS[name].run(encoder, root)


# ---------------------------------------------------------------------------------------------- retrieval


def test_coco_keeps_five_captions_per_image_in_id_order(benchmark_root, fake):
    root, _ = benchmark_root
    encoder = fake()
    result = run("coco", encoder, root)
    # 4 images x 5 captions (image 7's sixth dropped); one caption of image 9 names no image, so it ties with all 4
    # images: the reference scripts' argsort tail ranks the last one (image 9 itself) first, T2I R@1 = 20/20
    # (torch.topk would pick the first image: 19/20)
    assert result["t2i_r1"] == 1.0
    assert result["i2t_r1"] == 1.0 and result["i2t_r10"] == 1.0
    assert result["t2i_r5"] == 1.0  # k >= the 4 images
    assert encoder.seen_walks == ["short"]


@pytest.mark.parametrize(
    ("task", "walk"),
    [
        ("flickr30k", "short"),
        ("sharegpt4v-1k", "long"),
        ("dci", "long"),
        ("urban1k", "long"),
        ("coco-cn", "short"),
        ("flickr30k-cna", "short"),
        ("lit-cn", "long"),
        ("dci-cn", "long"),
        ("docci-cn", "long"),
    ],
)
def test_retrieval_sets_pair_images_and_texts(benchmark_root, fake, task, walk):
    root, _ = benchmark_root
    encoder = fake()
    result = run(task, encoder, root)
    assert result and all(v == 1.0 for v in result.values()), result
    assert encoder.seen_walks == [walk]
    if task in ("coco-cn", "flickr30k-cna"):
        assert set(result) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}


def test_sharegpt4v_uses_the_first_1000_records(benchmark_root, fake):
    root, _ = benchmark_root
    from fgclip_eval.tasks.retrieval import read_sharegpt4v_1k

    pairs = read_sharegpt4v_1k(root)  # the file has 1003 records; the last 3 have no image
    assert len(pairs.images) == len(pairs.texts) == 1000
    assert pairs.images[999].name == f"{999:012d}.jpg"


# ------------------------------------------------------------------------------------------ classification


def _prompt_ids(names):
    from fgclip_eval.zeroshot import templates

    ids = {}
    for index, name in enumerate(names):
        for template in templates():
            ids.setdefault(template(name), index)
    return ids


def test_imagenet_and_v2_use_sorted_folders_and_the_openai_names(benchmark_root, fake):
    from fgclip_eval.zeroshot import imagenet_classnames

    root, expected = benchmark_root
    names = imagenet_classnames()
    assert len(names) == 1000
    first = {n: names.index(n) for n in names}
    encoder = fake(_prompt_ids(names))
    result = run("imagenet-1k", encoder, root)
    # labels 0, 1, 999 by sorted wnid; a label whose name repeats an earlier one loses to it
    assert result["top1"] == pytest.approx(sum(first[names[y]] == y for y in expected["imagenet"]) / 3)
    assert result["top5"] == 1.0
    assert encoder.patch_budgets == [1024]  # FG-CLIP 2's ImageNet protocol: a fixed 1024-patch budget
    v2 = run("imagenet-v2", encoder, root)  # folders 2, 10, 998: label = int(folder name)
    assert v2["top1"] == pytest.approx(sum(first[names[y]] == y for y in (2, 10, 998)) / 3)


@pytest.mark.parametrize(
    "task", ["cifar10", "cifar100", "food101", "sun397", "stanford_car", "aircraft", "dtd", "caltech101", "flowers"]
)
def test_torchvision_sets_read_their_download_layouts(benchmark_root, fake, task):
    root, _ = benchmark_root
    encoder = fake()
    assert run(task, encoder, root) == {"top1": 1.0, "top5": 1.0}


def test_pets_class_names_come_from_the_dataset(benchmark_root, fake):
    root, expected = benchmark_root
    assert run("pets", fake(_prompt_ids(expected["pets"])), root)["top1"] == 1.0
    assert run("pets", fake(), root)["top1"] < 1.0  # without the names the prompts mean nothing


def test_flowers_without_a_class_names_file_uses_the_shipped_names(benchmark_root, fake, tmp_path):
    import shutil

    from fgclip_eval.tasks.classification import FLOWERS_NAMES
    from fgclip_eval.zeroshot import templates

    root, _ = benchmark_root
    shutil.copytree(root / "flowers-102", tmp_path / "flowers-102")
    (tmp_path / "flowers-102" / "classnames.txt").unlink()
    names = FLOWERS_NAMES.read_text().splitlines()
    assert len(names) == 102 and names[0] == "pink primrose" and names[-1] == "blackberry lily"
    # the generated images are of label ids 0..101 (id<k> prompts in classnames.txt); the shipped names mean nothing
    # to the fake encoder, but every prompt of label k now says the k-th shipped name
    encoder = fake({t(n): i for i, n in enumerate(names) for t in templates()})
    assert run("flowers", encoder, tmp_path)["top1"] == 1.0


# -------------------------------------------------------------------------------------------------- boxes


def test_coco_box_classification(benchmark_root, fake):
    root, _ = benchmark_root
    encoder = fake()
    result = run("coco-box", encoder, root)
    # 3 boxes; the third is painted as the other class: 2/3; two classes: top-5 is 1
    assert result == {"top1": pytest.approx(2 / 3), "top5": 1.0, "n_boxes": 3}
    assert encoder.seen_walks == ["box"]


def test_lvis_reads_train2017_images_too(benchmark_root, fake):
    root, _ = benchmark_root
    assert run("lvis-box", fake(), root) == {"top1": 1.0, "top5": 1.0, "n_boxes": 2}


def test_boxclass_cn_uses_raw_names(benchmark_root, fake):
    root, _ = benchmark_root
    encoder = fake({"猫 id0": 0, "狗 id1": 1})
    assert run("boxclass-cn", encoder, root) == {"top1": 1.0, "top5": 1.0, "n_boxes": 2}


@pytest.mark.parametrize("split", ["hard", "medium", "easy", "trivial"])
def test_fgovd(benchmark_root, fake, split):
    root, _ = benchmark_root
    # item 3's positive (id4) is not what its box shows (id2, one of its negatives): 2 of 3 correct
    assert run(f"fgovd-{split}", fake(), root) == {"accuracy": pytest.approx(2 / 3), "n_items": 3}


def test_region_tasks_are_not_applicable_without_regions(benchmark_root, fake):
    root, _ = benchmark_root
    for task in ("coco-box", "lvis-box", "boxclass-cn", "fgovd-hard", "voc21"):
        with pytest.raises(NotApplicable):
            run(task, fake(family="clip"), root)


def test_missing_data_names_the_place_and_the_layout(tmp_path, fake):
    for name, task in TASKS.items():
        if name.startswith("fgshapes"):
            continue
        with pytest.raises(MissingDataset) as err:
            task.run(fake(), tmp_path)
        assert str(tmp_path) in str(err.value) and "expected" in str(err.value), name


# ------------------------------------------------------------------------------------------- segmentation

# (left, right) class of each set's painted halves, after its label conventions (conftest.build_segmentation)
SEG_CLASSES = {
    "voc21": (0, 15),
    "voc20": (None, 14),  # reduced labels: background ignored, VOC id 15 is class 14
    "context60": (1, 2),
    "context59": (0, 1),
    "ade20k": (0, 2),
    "cityscapes": (0, 18),
    "coco_stuff164k": (0, 170),
    "coco_object": (0, 3),
}


# one VOC layout and Cityscapes every run; the other sets (20-60 s each here) with the slow checks
EVERYDAY_SEG = ("voc21", "cityscapes")


@pytest.mark.parametrize(
    "task", [t if t in EVERYDAY_SEG else pytest.param(t, marks=pytest.mark.slow) for t in SEG_CLASSES]
)
def test_segmentation_sets(benchmark_root, fake, task):
    from fgclip_eval.tasks.segmentation import SETS, classnames
    from fgclip_eval.zeroshot import templates

    root, _ = benchmark_root
    names = classnames(SETS[task])
    left, right = SEG_CLASSES[task]
    painted = {left: 0, right: 33}
    ids = {template(name): painted.get(c, 700 + c) for c, name in enumerate(names) for template in templates()}
    result = run(task, fake(ids), root)
    # two half-image regions of known classes; only resampling at the border can cost a few pixels
    assert result["miou"] > 0.95 and result["pixel_accuracy"] > 0.97, result
    assert result["n_images"] == 1
    wrong = {template(name): 900 for name in names for template in templates()}  # every class points elsewhere
    assert run(task, fake(wrong), root)["miou"] < 0.5


def test_segmentation_class_lists():
    from fgclip_eval.tasks.segmentation import SETS, classnames

    sizes = {name: len(classnames(spec)) for name, spec in SETS.items()}
    assert sizes == {
        "voc21": 21,
        "voc20": 20,
        "context60": 60,
        "context59": 59,
        "ade20k": 150,
        "cityscapes": 19,
        "coco_stuff164k": 171,
        "coco_object": 81,
    }
    assert classnames(SETS["voc21"])[0] == "background" and classnames(SETS["voc20"])[0] == "aeroplane"


def test_mean_iou_matches_mmseg_iou_metric():
    import numpy as np
    import torch
    from mmseg.evaluation import IoUMetric

    from fgclip_eval.metrics import confusion_matrix, mean_iou

    generator = torch.Generator().manual_seed(0)
    predicted = torch.randint(0, 6, (3, 20, 30), generator=generator)
    label = torch.randint(0, 6, (3, 20, 30), generator=generator)
    label[label == 5] = 255  # ignored pixels; class 5 then only occurs in predictions
    confusion = sum(confusion_matrix(p, t, 6) for p, t in zip(predicted, label, strict=True))
    ours, _ = mean_iou(confusion)
    stats = [IoUMetric.intersect_and_union(p, t, 6, 255) for p, t in zip(predicted, label, strict=True)]
    totals = [sum(s[i] for s in stats) for i in range(4)]
    metrics = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    assert ours == pytest.approx(float(np.nanmean(metrics["IoU"])), abs=1e-6)  # mmseg sums in float32


def test_shard_and_gather_without_a_process_group():
    import torch

    from fgclip_eval.distributed import gather_rows, shard

    assert shard(5) == range(5)
    rows = torch.arange(6.0).reshape(3, 2)
    assert gather_rows(rows) is rows


@pytest.mark.parametrize(
    ("task", "relative", "line"),
    [
        ("coco-cn", "coco-cn/pair.txt", "COCO_val2014_000000000041#zhm#9"),
        ("lit-cn", "LIT-CN/image_caption_long_cn.txt", "images/61.jpg no tab here"),
    ],
)
def test_malformed_caption_lines_name_file_and_line(benchmark_root, fake, tmp_path, task, relative, line):
    import shutil

    from fgclip_eval.tasks import BadDataset

    root, _ = benchmark_root
    target = tmp_path / relative
    shutil.copytree((root / relative).parent, target.parent)
    lines = target.read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join([*lines[:1], line, *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(BadDataset, match=rf"{target}:2: expected"):
        run(task, fake(), tmp_path)
