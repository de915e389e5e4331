"""Summaries of repeated timings."""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.stdev(values) if len(values) > 1 else 0.0


def median_interval(values: Sequence[float], confidence: float = 0.95) -> list[float]:
    """A distribution-free interval for the median: the order statistics (j, n+1-j) whose
    binomial coverage is at least `confidence`, or the whole range where too few values
    reach it (fewer than 6 for 95%). Timings are skewed; no normal shape is assumed."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("interval of no values")
    best = 1
    for j in range(1, n // 2 + 1):
        # P(X_(j) <= median <= X_(n+1-j)) = 1 - 2 P(Bin(n, 1/2) <= j - 1)
        tail = sum(math.comb(n, i) for i in range(j)) / 2**n
        if 1 - 2 * tail >= confidence:
            best = j
        else:
            break
    return [ordered[best - 1], ordered[n - best]]
