"""Hard negatives of a region caption without a language model: rewrites of exactly one attribute.

A rewrite replaces one word (or one category name) of the caption:

* **colour**, **size**, **material**: by a word of *another* group of the vocabulary (groups hold synonyms and
  near-synonyms: ``small / little / tiny``, ``gray / grey``, ``metal / steel``), never one already in the caption;
* **count**: a number (2–10, word or digit) by another number of the same form;
* **position**: ``left`` ↔ ``right``, ``top`` ↔ ``bottom``, ``upper`` ↔ ``lower``, ``above`` ↔ ``below``, only the
  opposite (``left`` → ``top`` could still be true of an object in the top left);
* **category**: the box's category by another category of the same data set — never one of its synonym group
  (``sofa`` / ``couch``, ``person`` / ``man``), never one whose words contain the other's (``glass`` /
  ``wine glass``); categories absent from the image first.

Words that belong to the category name are never rewritten as attributes (the fruit ``orange`` keeps its name).
Every rewrite is checked: after mapping each word to its synonym group it must differ from the caption
(:func:`is_false`), so a synonym is never a negative. The choice among rewrites is seeded per box and balanced over
the attribute kinds (round-robin), so the same input and seed give the same negatives. When fewer rewrites exist
than asked for (a bare category name in a set of few categories), the box gets as many as are truly false.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COLORS: tuple[tuple[str, ...], ...] = (
    ("red", "crimson", "scarlet"), ("green",), ("blue", "navy"), ("yellow",), ("orange",), ("purple", "violet"),
    ("pink",), ("brown",), ("black",), ("white",), ("gray", "grey"), ("gold", "golden"), ("silver",),
)  # fmt: skip
SIZES: tuple[tuple[str, ...], ...] = (
    ("small", "little", "tiny", "mini"), ("large", "big", "huge", "giant", "enormous"),
)  # fmt: skip
MATERIALS: tuple[tuple[str, ...], ...] = (
    ("wooden", "wood"), ("metal", "metallic", "steel", "iron", "aluminium", "aluminum"), ("plastic",), ("glass",),
    ("leather",), ("stone",), ("paper", "cardboard"), ("fabric", "cloth", "cotton", "wool", "woolen"),
    ("ceramic", "porcelain"), ("rubber",), ("concrete",), ("brick",),
)  # fmt: skip
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "upper": "lower", "lower": "upper",
             "above": "below", "below": "above"}  # fmt: skip
# categories that name the same thing, or one a kind of the other: never a negative of each other
CATEGORY_SYNONYMS: tuple[frozenset[str], ...] = tuple(
    frozenset(group)
    for group in (
        {"sofa", "couch"}, {"tv", "television", "tvmonitor", "monitor", "screen"},
        {"cell phone", "cellphone", "mobile phone", "phone", "smartphone"},
        {"person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid", "human",
         "pedestrian", "rider"},
        {"motorcycle", "motorbike"}, {"bicycle", "bike"}, {"airplane", "aeroplane", "plane", "aircraft", "jet"},
        {"car", "automobile"}, {"dining table", "table"}, {"potted plant", "plant", "houseplant"},
        {"hair drier", "hair dryer"}, {"cup", "mug"}, {"dog", "puppy"}, {"cat", "kitten"}, {"donut", "doughnut"},
        {"boat", "ship"}, {"truck", "lorry"}, {"laptop", "computer", "notebook"}, {"bus", "coach"},
        {"rock", "stone"}, {"ball", "sports ball"}, {"bag", "handbag", "backpack"}, {"cube", "box"},
    )
)  # fmt: skip

KINDS = ("color", "size", "material", "count", "position", "category")

_WORD = re.compile(r"\w+")  # Unicode words: a run of Chinese characters is one


def _groups(table: Sequence[Sequence[str]]) -> dict[str, int]:
    return {word: i for i, group in enumerate(table) for word in group}


_WORD_GROUPS = {
    "color": _groups(COLORS),
    "size": _groups(SIZES),
    "material": _groups(MATERIALS),
}


def _canonical_word(word: str) -> str:
    w = word.lower()
    for kind, groups in _WORD_GROUPS.items():
        if w in groups:
            return f"<{kind}{groups[w]}>"
    for i, group in enumerate(CATEGORY_SYNONYMS):
        if w in group:
            return f"<cat{i}>"
    return w


def canonical(text: str) -> str:
    """The text with every word replaced by its synonym group (multi-word category names first)."""
    lowered = text.lower()
    for i, group in enumerate(CATEGORY_SYNONYMS):
        for name in sorted(group, key=len, reverse=True):
            if " " in name:
                lowered = re.sub(rf"\b{re.escape(name)}\b", f"cat{i}marker", lowered)
    words = [_canonical_word(w) for w in _WORD.findall(lowered)]
    return " ".join(re.sub(r"^cat(\d+)marker$", r"<cat\1>", w) for w in words)


def is_false(positive: str, rewrite: str) -> bool:
    """Whether ``rewrite`` says something else than ``positive`` (not equal up to synonyms)."""
    return canonical(positive) != canonical(rewrite)


def same_category(a: str, b: str) -> bool:
    """Whether two category names may denote the same thing: equal, synonyms, or one's words within the other's."""
    a, b = a.lower().strip(), b.lower().strip()
    if a == b or any(a in g and b in g for g in CATEGORY_SYNONYMS):
        return True
    wa, wb = set(_WORD.findall(a)), set(_WORD.findall(b))
    return bool(wa and wb) and (wa <= wb or wb <= wa)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


def _find(text: str, phrase: str) -> _Span | None:
    match = re.search(rf"(?<![A-Za-z0-9]){re.escape(phrase)}(?![A-Za-z0-9])", text, flags=re.IGNORECASE)
    return _Span(match.start(), match.end()) if match else None


_ARTICLE_BEFORE = re.compile(r"(?<![A-Za-z0-9])(an?)(\s+)$", flags=re.IGNORECASE)


def _replace(text: str, span: _Span, word: str) -> str:
    """``text`` with ``span`` replaced by ``word`` (capitalised like the original; a preceding a / an agrees)."""
    original = text[span.start : span.end]
    if original[:1].isupper():
        word = word[:1].upper() + word[1:]
    head = text[: span.start]
    match = _ARTICLE_BEFORE.search(head)
    if match:
        article = "an" if word[:1].lower() in "aeiou" else "a"
        article = article.capitalize() if match.group(1)[0].isupper() else article
        head = head[: match.start()] + article + match.group(2)
    return head + word + text[span.end :]


def _vocabulary_rewrites(text: str, protected: list[_Span]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    present = {w.lower() for w in _WORD.findall(text)}
    for match in _WORD.finditer(text):
        span = _Span(match.start(), match.end())
        if any(p.start <= span.start and span.end <= p.end for p in protected):
            continue
        word = match.group().lower()
        for kind, table in (("color", COLORS), ("size", SIZES), ("material", MATERIALS)):
            groups = _WORD_GROUPS[kind]
            if word in groups:
                for i, group in enumerate(table):
                    if i != groups[word] and not present & set(group):
                        out[kind].append(_replace(text, span, group[0]))
        if word in NUMBER_WORDS:
            out["count"] += [_replace(text, span, n) for n in NUMBER_WORDS if n != word]
        elif word.isascii() and word.isdigit() and 2 <= int(word) <= 10:
            out["count"] += [_replace(text, span, str(n)) for n in range(2, 11) if n != int(word)]
        if word in OPPOSITES and OPPOSITES[word] not in present:
            out["position"].append(_replace(text, span, OPPOSITES[word]))
    return out


def find_category(text: str, categories: Iterable[str]) -> str | None:
    """The longest category name written in ``text`` (whole words), if any."""
    found = [c for c in categories if c.strip() and _find(text, c)]
    return max(found, key=len) if found else None


def hard_negatives(
    phrase: str,
    count: int,
    seed: int | str,
    category: str | None = None,
    categories: Sequence[str] = (),
    in_image: Iterable[str] = (),
) -> list[str]:
    """Up to ``count`` false rewrites of ``phrase``, each changing one attribute, the same for the same inputs.

    ``category``: the box's category (found in the phrase when not given); ``categories``: the data set's category
    names (swaps); ``in_image``: categories of the image's other boxes (swapped to last)."""
    if count <= 0 or not phrase.strip():
        return []
    category = category if category and _find(phrase, category) else find_category(phrase, categories)
    cat_span = _find(phrase, category) if category else None
    rewrites = _vocabulary_rewrites(phrase, [cat_span] if cat_span else [])
    if category and cat_span:
        present = {c.lower() for c in in_image}
        others = sorted({c for c in categories if c.strip() and not same_category(c, category)})
        others.sort(key=lambda c: c.lower() in present)  # absent from the image first (stable)
        rewrites["category"] = [_replace(phrase, cat_span, c) for c in others]
    rng = random.Random(f"{seed}")
    pools = []
    seen = {canonical(phrase)}
    for kind in KINDS:
        pool = []
        for text in rewrites[kind]:
            key = canonical(text)
            if key not in seen:  # false (not the phrase up to synonyms) and not a repeat
                seen.add(key)
                pool.append(text)
        rng.shuffle(pool)
        if kind == "category":  # keep absent-from-image categories first after the shuffle
            pool.sort(key=lambda t: find_category(t, [c for c in in_image]) is not None)
        pools.append(pool)
    chosen: list[str] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return chosen


def supplied_negatives(phrase: str, negatives: Sequence) -> tuple[list[str], int]:
    """(kept, dropped): negatives made elsewhere, without empty ones, repeats and ones equal to the phrase up to
    synonyms."""
    kept, seen, dropped = [], {canonical(phrase)}, 0
    for text in negatives:
        text = re.sub(r"\s+", " ", text).strip() if isinstance(text, str) else ""
        key = canonical(text) if text else ""
        if not text or key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(text)
    return kept, dropped
