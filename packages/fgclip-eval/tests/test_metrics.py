"""Metrics against values computed by hand on crafted similarities."""

from __future__ import annotations

import math

import pytest
import torch

from fgclip_eval.metrics import (
    confusion_matrix,
    first_is_best,
    image_to_text_recall,
    mean_iou,
    text_to_image_recall,
    topk_accuracy,
)


def test_retrieval_with_several_texts_per_image():
    # 3 images, 2 texts each (texts 2i, 2i+1 belong to image i)
    text_to_image = torch.tensor([0, 0, 1, 1, 2, 2])
    s = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.0, 0.0, 0.0],  # image 0: best text 0 (own) -> hit@1
            [0.0, 0.0, 0.1, 0.2, 0.9, 0.3],  # image 1: best text 4 (image 2), own text 3 second -> miss@1, hit@2
            [0.5, 0.0, 0.0, 0.0, 0.1, 0.4],  # image 2: best text 0, then own text 5 -> miss@1, hit@2
        ]
    )
    assert image_to_text_recall(s, text_to_image, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    # columns: text 0 -> image 0 (0.9) hit; text 1 -> image 0 (0.1) hit; text 2 -> image 0 (0.8) miss;
    # text 3 -> image 1 hit; text 4 -> image 1 (0.9) miss; text 5 -> image 2 (0.4) hit
    t2i = text_to_image_recall(s, text_to_image, ks=(1, 3))
    assert t2i == pytest.approx({1: 4 / 6, 3: 1.0})


def test_classification_and_hard_negatives():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert topk_accuracy(logits, torch.tensor([1, 1, 0]), ks=(1, 2)) == pytest.approx({1: 1 / 3, 2: 2 / 3})
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.3, 0.1], [0.1, 0.5, 0.0], [0.2, 0.9, 0.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert first_is_best(scores) == 0.5  # row 1 is a tie: correct
    assert first_is_best(scores, mask) == 0.75  # row 3 has no real negative left


def test_mean_iou_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    predicted = torch.tensor([[0, 1, 1], [1, 1, 0]])
    confusion = confusion_matrix(predicted, target, num_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    miou, per_class = mean_iou(confusion)
    # class 0: 1 / (1 + 1) ; class 1: 2 / (2 + 2) ; class 2: 0 / 1 ; class 3 absent
    assert per_class[:3].tolist() == [0.5, 0.5, 0.0] and math.isnan(per_class[3].item())
    assert math.isclose(miou, 1 / 3)
