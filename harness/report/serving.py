"""What serving a variant costs, from its record: capacity under a latency objective, dollars
per million queries at a stated machine price, the monthly volume at which owning the machine
breaks even with a hosted model, and decode speed as a share of the memory bandwidth.
Pure functions; the report reads their inputs from records and config."""

from __future__ import annotations

from typing import Optional

from harness.record import LoadLevel

HOURS_PER_MONTH = 730


def capacity_at(curve: list[LoadLevel], slo_p95_ms: float) -> Optional[LoadLevel]:
    """The load-curve level with the highest throughput whose p95 latency meets the objective
    (None: no level does)."""
    meeting = [level for level in curve if level.latency_p95_ms is not None and level.latency_p95_ms <= slo_p95_ms]
    return max(meeting, key=lambda level: level.queries_per_s or 0.0, default=None)


def usd_per_million_queries(usd_per_hour: float, queries_per_s: float) -> float:
    """A machine kept busy at `queries_per_s`, paid by the hour."""
    return usd_per_hour / (queries_per_s * 3600) * 1e6


def break_even_queries_per_month(usd_per_hour: float, hosted_usd_per_query: float) -> float:
    """Queries a month above which a machine paid around the clock costs less than the hosted
    model (if it can serve them: see its capacity)."""
    return usd_per_hour * HOURS_PER_MONTH / hosted_usd_per_query


def bandwidth_share(model_mib: float, decode_tokens_per_s: float, gb_per_s: float) -> float:
    """Decoding reads every weight once per token: bytes read per second over what the memory
    can move. Near 1, the memory is the limit; far below, the kernel is."""
    return model_mib * 2**20 * decode_tokens_per_s / (gb_per_s * 1e9)
