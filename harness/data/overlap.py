"""How far the test split is from training: per test phrasing, its nearest training
phrasing by character-trigram Jaccard similarity, within the same language. A held-out
design shows low similarities; a pair near 1.0 is a leak (or a phrasing written twice).

Rows of the synthetic generator carry the phrasing they were drawn from (`template_id`), so
phrasings are compared, not their slot-filled, noised copies; rows without one (your own
data) are compared by their texts."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

_SLOT = re.compile(r"\{\w+\}")


def trigrams(text: str) -> frozenset[str]:
    t = f"  {_SLOT.sub('#', text.casefold())} "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass(frozen=True)
class Nearest:
    language: str
    test: str
    test_intent: str
    train: str
    train_intent: str
    similarity: float


def phrasings(rows: Iterable[dict], text_of: Callable[[dict], Optional[str]]) -> dict[str, dict[str, str]]:
    """language -> phrasing -> intent, each phrasing once."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows:
        out[r["language"]][text_of(r) or r["text"]] = r["intent"]
    return out


def nearest_train(train: dict[str, dict[str, str]], test: dict[str, dict[str, str]]) -> list[Nearest]:
    """Each test phrasing with its most similar training phrasing of the same language."""
    out = []
    for lang, tests in sorted(test.items()):
        grams = {p: trigrams(p) for p in train.get(lang, {})}
        for phrasing, intent in sorted(tests.items()):
            g = trigrams(phrasing)
            best = max(grams, key=lambda p: jaccard(g, grams[p]), default=None)
            if best is not None:
                out.append(Nearest(lang, phrasing, intent, best, train[lang][best], jaccard(g, grams[best])))
    return out


def summarise(pairs: Sequence[Nearest], threshold: float) -> dict[str, dict[str, float]]:
    """language -> test phrasings, mean and max nearest similarity, and how many reach
    `threshold`."""
    by_lang: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        by_lang[p.language].append(p.similarity)
    return {
        lang: {"phrasings": len(s), "mean": sum(s) / len(s), "max": max(s), "near": sum(x >= threshold for x in s)}
        for lang, s in sorted(by_lang.items())
    }
