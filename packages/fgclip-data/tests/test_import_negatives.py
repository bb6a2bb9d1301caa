"""Hard negatives without a language model: one attribute rewritten, truly false (never a synonym, never the same
category), deterministic by seed, 10 when the vocabulary allows and otherwise as many as are false."""

from __future__ import annotations

import pytest

from fgclip_data.importers.negatives import (
    canonical,
    hard_negatives,
    is_false,
    same_category,
    supplied_negatives,
)

PHRASES = [
    "two small red wooden chairs on the left",
    "a large blue car at the top",
    "a man in a grey shirt",
    "three black cats above the sofa",
    "a little metal box",
    "the cup on the right",
]
CATEGORIES = ["chair", "car", "person", "cat", "sofa", "couch", "cup", "mug", "wine glass", "glass", "dog"]


@pytest.mark.parametrize("phrase", PHRASES)
def test_every_negative_is_false_distinct_and_changes_one_word(phrase):
    negatives = hard_negatives(phrase, 10, seed=0, categories=CATEGORIES)
    assert negatives, phrase
    assert all(is_false(phrase, n) for n in negatives)
    assert len({canonical(n) for n in negatives}) == len(negatives)  # no two say the same
    for n in negatives:  # one attribute: the texts differ in exactly one word position (or one category name)
        a, b = phrase.lower().split(), n.lower().split()
        if len(a) == len(b):
            assert sum(x != y for x, y in zip(a, b, strict=True)) <= 2  # the word (+ its article a/an)


def test_deterministic_by_seed():
    phrase = PHRASES[0]
    assert hard_negatives(phrase, 10, seed=5) == hard_negatives(phrase, 10, seed=5)
    assert hard_negatives(phrase, 10, seed=5) != hard_negatives(phrase, 10, seed=6)


def test_ten_when_the_vocabulary_allows_and_every_kind_used():
    negatives = hard_negatives("two small red wooden chairs on the left", 10, seed=0, categories=CATEGORIES)
    assert len(negatives) == 10
    assert any("large" in n for n in negatives)  # size
    assert any("right" in n for n in negatives)  # position (the opposite only)
    assert any("two" not in n for n in negatives)  # count
    assert any("wooden" not in n and "red" in n and "small" in n and "two" in n for n in negatives)  # material
    assert any(n.split()[2] != "red" for n in negatives)  # colour


def test_synonyms_are_never_negatives():
    assert not is_false("a sofa", "a couch") and not is_false("a small dog", "a tiny dog")
    assert not is_false("a grey cat", "a gray cat") and not is_false("a wooden table", "a wood table")
    assert is_false("a sofa", "a chair") and is_false("a small dog", "a large dog")
    # sofa -> couch refused; only the other categories remain
    assert hard_negatives("a sofa", 10, seed=0, categories=["sofa", "couch", "chair"]) == ["a chair"]
    for n in hard_negatives("a little box", 10, seed=0):
        assert "small" not in n and "tiny" not in n and "mini" not in n


def test_never_the_same_category_or_one_containing_it():
    assert same_category("glass", "wine glass") and same_category("person", "man") and same_category("TV", "television")
    assert not same_category("dog", "cat")
    negatives = hard_negatives("a glass", 10, seed=0, categories=["glass", "wine glass", "cup", "bowl"])
    assert sorted(negatives) == ["a bowl", "a cup"]


def test_fewer_when_fewer_are_false_and_none_without_vocabulary():
    assert hard_negatives("a dog", 10, seed=0, categories=["dog", "cat"]) == ["a cat"]
    assert hard_negatives("something odd", 10, seed=0) == []
    assert hard_negatives("", 10, seed=0) == []


def test_position_only_to_the_opposite():
    negatives = hard_negatives("the cup on the left", 10, seed=0)
    assert negatives == ["the cup on the right"]


def test_category_words_are_not_rewritten_as_attributes():
    negatives = hard_negatives("an orange on a table", 10, seed=0, categories=["orange", "apple", "table"])
    # 'orange' names the category: swapped for another category, never for another colour
    assert sorted(negatives) == ["a table on a table", "an apple on a table"]


def test_categories_in_the_image_come_last():
    for seed in range(5):
        negatives = hard_negatives("dog", 3, seed, categories=["dog", "cat", "car", "bus"], in_image=["dog", "cat"])
        assert sorted(negatives[:2]) == ["bus", "car"] and negatives[2] == "cat"


def test_count_keeps_its_form():
    assert all(n.split()[0] in {"2", "3", "4", "5", "6", "7", "8", "9", "10"} for n in hard_negatives("3 dogs", 8, 0))
    assert len(hard_negatives("3 dogs", 10, 0)) == 8  # 2..10 without 3


def test_supplied_negatives_drop_synonyms_repeats_and_empties():
    kept, dropped = supplied_negatives("a sofa", ["a couch", "a chair", "A chair", " ", 3, "a red sofa"])
    assert kept == ["a chair", "a red sofa"] and dropped == 4
