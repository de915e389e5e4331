"""Classification metrics over (gold, predicted) pairs; a prediction of None is an invalid
answer, wrong for every metric and counted on its own."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Optional, Sequence

INVALID = "<invalid>"


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (sound near 0 and 1, unlike the normal one)."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def f1_per_label(gold: Sequence[str], pred: Sequence[Optional[str]], labels: Sequence[str]) -> dict[str, float]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold, pred):
        if g == p:
            tp[g] += 1
        else:
            fn[g] += 1
            if p is not None:
                fp[p] += 1
    out = {}
    for label in labels:
        denom = 2 * tp[label] + fp[label] + fn[label]
        out[label] = 2 * tp[label] / denom if denom else 0.0
    return out


def classification_metrics(
    gold: Sequence[str],
    pred: Sequence[Optional[str]],
    languages: Sequence[str],
    labels: Sequence[str],
) -> dict:
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, pred))
    low, high = wilson_interval(correct, n)
    # Macro-F1 over the labels present in the gold data, so a label set wider than the
    # test data does not drag it down with zeros.
    f1 = f1_per_label(gold, pred, labels)
    present = sorted(set(gold))
    by_language: dict[str, list[bool]] = defaultdict(list)
    for g, p, lang in zip(gold, pred, languages):
        by_language[lang].append(g == p)
    confusion: dict[str, dict[str, int]] = {g: {} for g in present}
    for g, p in zip(gold, pred):
        key = p if p is not None else INVALID
        confusion[g][key] = confusion[g].get(key, 0) + 1
    return {
        "n_samples": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": [low, high],
        "macro_f1": sum(f1[label] for label in present) / len(present) if present else 0.0,
        "invalid_rate": sum(p is None for p in pred) / n if n else 0.0,
        "accuracy_by_language": {k: sum(v) / len(v) for k, v in sorted(by_language.items())},
        "f1_by_intent": {label: f1[label] for label in present},
        "confusion": confusion,
    }
