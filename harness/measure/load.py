"""Open-loop load as serving benchmarks generate it (GuideLLM's sweep, vLLM's serving benchmark,
MLPerf Inference's server scenario), as pure functions: when each request is sent, which rates
to try, when a rate is saturated, and what a rate's requests add up to (latency percentiles,
goodput at the latency objective, accuracy, agreement with the synchronous answers, capacity).

Open loop: a request is sent at its scheduled instant whether or not earlier ones have been
answered, so a slow server meets a growing queue, as it would in service; a closed loop (the
next request after the last answer) hides that queue by slowing the client down with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

from harness.measure.accuracy import wilson_interval
from harness.measure.stats import percentile
from harness.record import ServedRate

SYNCHRONOUS, THROUGHPUT, POISSON = "synchronous", "throughput", "poisson"
# A rate is saturated once the server has answered under this share of what it was sent...
SATURATED_SHARE = 0.9
# ...and more requests wait than this many rounds of its slots: a queue that a rate within
# capacity does not build (with fewer waiting, a Poisson burst explains the lag).
SATURATED_ROUNDS = 2


def poisson_arrivals(rate_per_s: float, n: int, seed: int) -> list[float]:
    """Seconds from the rate's start at which its `n` requests are sent: the first at once, then
    exponential gaps of mean 1/rate. The gaps come from `random.Random(seed)` alone, never from
    responses; every rate draws the same uniforms (scaled by its rate), so two rates differ in
    their rate, not in their luck."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(rate_per_s)
    return times


def rates_between(low_per_s: float, high_per_s: float, k: int) -> list[float]:
    """`k` rates evenly spaced strictly between where the sweep starts and the maximum throughput.
    It starts at the synchronous rate, as GuideLLM's sweep does, where parallel requests at least
    double it; on a server they help less (a CPU that one request already keeps busy), at half
    the maximum: Poisson arrivals queue well below the rate a closed loop reaches, so that is
    where its capacity lies, and rates squeezed between two near-equal ones would all saturate."""
    high = max(low_per_s, high_per_s)
    start = min(low_per_s, high / 2)
    step = (high - start) / (k + 1)
    return [start + step * i for i in range(1, k + 1)]


def saturated(sent: int, completed: int, slots: int) -> bool:
    """Clearly past what the server can take, judged at a send: it has answered under 90% of the
    requests sent so far, and more wait than two rounds of its slots."""
    waiting = sent - completed
    return completed < SATURATED_SHARE * sent and waiting > SATURATED_ROUNDS * slots


@dataclass
class Stop:
    """Why a pass stopped before its last request was answered; `saturated` where the server
    could not keep up (a pass cut by its time limit with no queue building is not)."""

    reason: str
    saturated: bool


@dataclass
class Outcome:
    """One measured request."""

    query: int  # which test query it asked
    sent_s: float  # when it was sent, from the rate's start
    latency_ms: float  # end to end; an unfinished request's age when the rate stopped (a lower bound)
    ttft_ms: Optional[float] = None  # to the first streamed token
    text: Optional[str] = None  # the raw answer; None: unfinished or failed
    error: Optional[str] = None


def rate_row(
    mode: str,
    offered_per_s: Optional[float],
    outcomes: list[Outcome],
    slo_ms: float,
    correct: Callable[[int, str], bool],
    reference: dict[int, str],
    stop: Optional[Stop] = None,
) -> ServedRate:
    """What one rate's measured requests add up to. Achieved rate: answers over the span from
    the first send to the last answer. Goodput: the share of requests answered within the
    objective (an unfinished or failed request is not), with its Wilson interval, and good
    answers a second. Accuracy counts an unanswered request wrong; agreement is over the
    requests whose query the synchronous pass answered, its answer text equal to that one."""
    done = [o for o in outcomes if o.text is not None]
    good = sum(o.latency_ms <= slo_ms for o in done)
    span_s = (max(o.sent_s + o.latency_ms / 1000 for o in done) - min(o.sent_s for o in outcomes)) if done else 0.0
    paired = [o for o in outcomes if o.query in reference]
    latencies = [o.latency_ms for o in outcomes]
    ttfts = [o.ttft_ms for o in done if o.ttft_ms is not None]
    return ServedRate(
        mode=mode,
        offered_queries_per_s=offered_per_s,
        achieved_queries_per_s=len(done) / span_s if span_s > 0 else None,
        requests=len(outcomes),
        answered=len(done),
        saturated=stop.saturated if stop else False,
        stop_reason=stop.reason if stop else None,
        goodput=good / len(outcomes),
        goodput_ci95=list(wilson_interval(good, len(outcomes))),
        goodput_queries_per_s=good / span_s if span_s > 0 else None,
        accuracy=sum(o.text is not None and correct(o.query, o.text) for o in outcomes) / len(outcomes),
        agreement=sum(o.text == reference[o.query] for o in paired) / len(paired) if paired else None,
        errors=sorted({o.error for o in outcomes if o.error})[:3],
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_p99_ms=percentile(latencies, 99),
        ttft_p50_ms=percentile(ttfts, 50) if ttfts else None,
        ttft_p95_ms=percentile(ttfts, 95) if ttfts else None,
        ttft_p99_ms=percentile(ttfts, 99) if ttfts else None,
    )


def meets(row: ServedRate, slo_ms: float) -> bool:
    """A rate the server kept up with, answering every request (a failed request is quick, and
    would flatter the p95), at a p95 within the objective."""
    return (
        not row.saturated
        and row.answered == row.requests
        and row.achieved_queries_per_s is not None
        and row.latency_p95_ms <= slo_ms
    )


def _failed(rows: list[ServedRate], slo_ms: float) -> list[ServedRate]:
    """The rows that missed the objective: Poisson rates, and the synchronous pass where even one
    request at a time missed it (no open-loop rate can do better)."""
    return [r for r in rows if r.mode != THROUGHPUT and not meets(r, slo_ms)]


def capacity(rows: list[ServedRate], slo_ms: float) -> tuple[Optional[float], list[float]]:
    """(the highest achieved Poisson rate whose p95 meets the objective, or None where none
    does; the interval it lies in: from that rate, or from the lowest rate that failed below it
    where one did (a p95 of a few dozen requests is noisy near capacity), to the lowest rate
    above it that failed, or else to the highest rate any pass reached). Only open-loop rates
    count: one request at a time meets an objective that the same rate, arriving at random,
    may not."""
    failed = _failed(rows, slo_ms)
    reached = max((r.achieved_queries_per_s or 0.0 for r in rows), default=0.0)
    passing = [r for r in rows if r.mode == POISSON and meets(r, slo_ms)]
    best_row = max(passing, key=lambda r: r.achieved_queries_per_s, default=None)
    if best_row is None:
        return None, [0.0, min((_tried(r) for r in failed), default=reached)]
    best = best_row.achieved_queries_per_s
    below = [r.achieved_queries_per_s or 0.0 for r in failed if _tried(r) <= _tried(best_row)]
    above = [_tried(r) for r in failed if _tried(r) > _tried(best_row)]
    return best, [min([best, *below]), max(min(above, default=reached), best)]


def _tried(row: ServedRate) -> float:
    """The rate a row was loaded at: offered for a Poisson rate, achieved for the synchronous pass."""
    return row.offered_queries_per_s or row.achieved_queries_per_s or 0.0


def bisection_rate(rows: list[ServedRate], slo_ms: float) -> Optional[float]:
    """The rate halfway between the highest passing and the lowest failing rate above it, where
    both were tried (None: nothing brackets the capacity)."""
    best, (_, high) = capacity(rows, slo_ms)
    if best is None or high not in [_tried(r) for r in _failed(rows, slo_ms)]:
        return None
    return (best + high) / 2
