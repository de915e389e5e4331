"""Pareto frontiers: the variants that no other variant beats on every objective at once.

Pure functions over flat points (see `records.point`). A point missing an objective (energy
that could not be measured) is never on that objective's frontier and never dominates.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from harness.record import FRONTIERS, Column

# The objectives are the columns the record's spec names a frontier for.
ACCURACY, SPEED, LATENCY, MEMORY, ENERGY = (FRONTIERS[k] for k in ("accuracy", "speed", "latency", "memory", "energy"))
# Each is weighed against accuracy in its own plot; all of them together make the overall frontier.
COSTS = tuple(c for c in FRONTIERS.values() if c is not ACCURACY)


def _at_least_as_good(a: float, b: float, objective: Column) -> bool:
    return a >= b if objective.maximize else a <= b


def interval(p: Mapping, key: str) -> tuple[float, float]:
    """A figure's 95% interval where the point has one (accuracy, speeds), else the figure."""
    low, high = p.get(f"{key}_ci95_low"), p.get(f"{key}_ci95_high")
    return (low, high) if low is not None and high is not None else (p[key], p[key])


def clearly_better(a: Mapping, b: Mapping, o: Column) -> bool:
    """a beats b on o beyond the noise: their intervals do not overlap."""
    (a_low, a_high), (b_low, b_high) = interval(a, o.key), interval(b, o.key)
    return a_low > b_high if o.maximize else a_high < b_low


def dominates(a: Mapping, b: Mapping, objectives: Sequence[Column]) -> bool:
    """a is at least as good as b on every objective and better beyond the noise on one: two
    points whose intervals overlap on every objective are indistinguishable, and both stay."""
    return all(_at_least_as_good(a[o.key], b[o.key], o) for o in objectives) and any(
        clearly_better(a, b, o) for o in objectives
    )


def measured(points: Sequence[Mapping], objectives: Sequence[Column]) -> list[int]:
    return [i for i, p in enumerate(points) if all(p.get(o.key) is not None for o in objectives)]


def frontier(points: Sequence[Mapping], objectives: Sequence[Column]) -> list[int]:
    """Indices of the non-dominated points among those measured on every objective.
    Identical points do not dominate each other: both stay on the frontier."""
    candidates = measured(points, objectives)
    return [i for i in candidates if not any(dominates(points[j], points[i], objectives) for j in candidates if j != i)]


def frontier_memberships(points: Sequence[Mapping]) -> list[list[str]]:
    """For each point, the frontiers it is on: 'all' (every objective measured by every point
    together) and the short name of each accuracy-vs-cost pair's cost. Points are compared
    only with points of the same hardware on the same machine: a GPU's speed says nothing
    about a CPU variant, nor one machine's about another's."""
    out: list[list[str]] = [[] for _ in points]
    groups: dict[object, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p.get("hardware"), p.get("machine")), []).append(i)
    for members in groups.values():
        group = [points[i] for i in members]
        overall = [ACCURACY] + [c for c in COSTS if len(measured(group, [c])) == len(group)]
        for j in frontier(group, overall):
            out[members[j]].append("all")
        for cost in COSTS:
            for j in frontier(group, [ACCURACY, cost]):
                out[members[j]].append(cost.frontier)
    return out


def baseline_index(points: Sequence[Mapping]) -> Optional[int]:
    """The least compressed variant (largest artifact): what the others are compared with,
    as the study compares each quantization with its FP16 baseline."""
    sized = [i for i, p in enumerate(points) if p.get("size_mib") is not None]
    return max(sized, key=lambda i: points[i]["size_mib"]) if sized else None


def versus(point: Mapping, base: Mapping) -> str:
    """The study's way of stating a trade-off: '8.6x decode tok/s, -82% peak memory, ...'."""

    def pct(key: str, what: str) -> Optional[str]:
        if point.get(key) is None or not base.get(key):
            return None
        return f"{100 * (point[key] / base[key] - 1):+.0f}% {what}"

    def noise(o: Column) -> str:
        """'~' where the two figures' intervals overlap: a difference inside the noise."""
        return "" if clearly_better(point, base, o) or clearly_better(base, point, o) else "~"

    parts = []
    if point.get(SPEED.key) and base.get(SPEED.key):
        parts.append(f"{noise(SPEED)}{point[SPEED.key] / base[SPEED.key]:.1f}x decode tok/s")
    parts += [
        pct(LATENCY.key, "latency p50"),
        pct(MEMORY.key, "peak memory"),
        pct("size_mib", "size"),
        pct(ENERGY.key, "energy/query"),
    ]
    if point.get(ACCURACY.key) is not None and base.get(ACCURACY.key) is not None:
        parts.append(f"{noise(ACCURACY)}{100 * (point[ACCURACY.key] - base[ACCURACY.key]):+.1f} pt accuracy")
    return ", ".join(p for p in parts if p)
