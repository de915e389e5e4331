"""Pareto frontiers: the variants that no other variant beats on every objective at once.

Pure functions over points (`records.Point`). A point missing an objective (energy
that could not be measured) is never on that objective's frontier and never dominates.
"""

from __future__ import annotations

from typing import Optional, Sequence

from harness.report.columns import COLUMNS, FRONTIERS, Column
from harness.report.records import Point

# The objectives are the columns the column spec names a frontier for.
ACCURACY, SPEED, LATENCY, MEMORY, ENERGY = (FRONTIERS[k] for k in ("accuracy", "speed", "latency", "memory", "energy"))
# Each is weighed against accuracy in its own plot; all of them together make the overall frontier.
COSTS = tuple(c for c in FRONTIERS.values() if c is not ACCURACY)
SIZE = next(c for c in COLUMNS if c.key == "size_mib")


def _at_least_as_good(a: float, b: float, objective: Column) -> bool:
    return a >= b if objective.maximize else a <= b


def figure(p: Point, o: Column) -> float:
    """A point's figure on an objective it was measured on."""
    value = p.value(o.name)
    assert value is not None, f"{p.variant}: {o.name} unmeasured"
    return value


def interval(p: Point, o: Column) -> tuple[float, float]:
    """A figure's 95% interval where the point has one (accuracy, speeds), else the figure."""
    low, high = p.value(f"{o.name}_ci95_low"), p.value(f"{o.name}_ci95_high")
    return (low, high) if low is not None and high is not None else (figure(p, o), figure(p, o))


def clearly_better(a: Point, b: Point, o: Column) -> bool:
    """a beats b on o beyond the noise: their intervals do not overlap."""
    (a_low, a_high), (b_low, b_high) = interval(a, o), interval(b, o)
    return a_low > b_high if o.maximize else a_high < b_low


def dominates(a: Point, b: Point, objectives: Sequence[Column]) -> bool:
    """a is at least as good as b on every objective and better beyond the noise on one: two
    points whose intervals overlap on every objective are indistinguishable, and both stay."""
    return all(_at_least_as_good(figure(a, o), figure(b, o), o) for o in objectives) and any(
        clearly_better(a, b, o) for o in objectives
    )


def measured(points: Sequence[Point], objectives: Sequence[Column]) -> list[int]:
    return [i for i, p in enumerate(points) if all(p.value(o.name) is not None for o in objectives)]


def frontier(points: Sequence[Point], objectives: Sequence[Column]) -> list[int]:
    """Indices of the non-dominated points among those measured on every objective.
    Identical points do not dominate each other: both stay on the frontier."""
    candidates = measured(points, objectives)
    return [i for i in candidates if not any(dominates(points[j], points[i], objectives) for j in candidates if j != i)]


def frontier_memberships(points: Sequence[Point]) -> list[list[str]]:
    """For each point, the frontiers it is on: 'all' (every objective measured by every point
    together) and the short name of each accuracy-vs-cost pair's cost. Points are compared
    only with points of the same hardware on the same machine: a GPU's speed says nothing
    about a CPU variant, nor one machine's about another's."""
    out: list[list[str]] = [[] for _ in points]
    groups: dict[tuple[Optional[str], str], list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p.hardware, p.machine), []).append(i)
    for members in groups.values():
        group = [points[i] for i in members]
        overall = [ACCURACY] + [c for c in COSTS if len(measured(group, [c])) == len(group)]
        for j in frontier(group, overall):
            out[members[j]].append("all")
        for cost in COSTS:
            for j in frontier(group, [ACCURACY, cost]):
                out[members[j]].append(cost.frontier)
    return out


def baseline_index(points: Sequence[Point]) -> Optional[int]:
    """The least compressed variant (largest artifact): what the others are compared with,
    as the study compares each quantization with its FP16 baseline."""
    sized = measured(points, [SIZE])
    return max(sized, key=lambda i: figure(points[i], SIZE)) if sized else None


def versus(point: Point, base: Point) -> str:
    """The study's way of stating a trade-off: '8.6x decode tok/s, -82% peak memory, ...'."""

    def pct(o: Column, what: str) -> Optional[str]:
        value, of = point.value(o.name), base.value(o.name)
        if value is None or not of:
            return None
        return f"{100 * (value / of - 1):+.0f}% {what}"

    def noise(o: Column) -> str:
        """'~' where the two figures' intervals overlap: a difference inside the noise."""
        return "" if clearly_better(point, base, o) or clearly_better(base, point, o) else "~"

    parts: list[Optional[str]] = []
    speed, base_speed = point.value(SPEED.name), base.value(SPEED.name)
    if speed and base_speed:
        parts.append(f"{noise(SPEED)}{speed / base_speed:.1f}x decode tok/s")
    parts += [
        pct(LATENCY, "latency p50"),
        pct(MEMORY, "peak memory"),
        pct(SIZE, "size"),
        pct(ENERGY, "energy/query"),
    ]
    accuracy, base_accuracy = point.value(ACCURACY.name), base.value(ACCURACY.name)
    if accuracy is not None and base_accuracy is not None:
        parts.append(f"{noise(ACCURACY)}{100 * (accuracy - base_accuracy):+.1f} pt accuracy")
    return ", ".join(p for p in parts if p)
