"""The served load's pure parts, no server: the open-loop schedule, the saturation rule, and a
rate's figures and the capacity worked by hand."""

from __future__ import annotations

import asyncio

import pytest

from harness.measure.load import (
    POISSON,
    SYNCHRONOUS,
    THROUGHPUT,
    Outcome,
    bisection_rate,
    capacity,
    poisson_arrivals,
    rate_row,
    rates_between,
    saturated,
)
from harness.measure.served import label_grammar, open_loop, reply_text
from harness.record import ServedRate


def test_poisson_arrivals_are_fixed_by_the_seed_and_scale_with_the_rate():
    one = poisson_arrivals(1.0, 2000, seed=7)
    assert one == poisson_arrivals(1.0, 2000, seed=7)
    assert one != poisson_arrivals(1.0, 2000, seed=8)
    assert one[0] == 0.0 and all(b > a for a, b in zip(one, one[1:]))
    # the same uniforms at every rate: rate 4 sends at a quarter of rate 1's instants
    assert poisson_arrivals(4.0, 2000, seed=7) == pytest.approx([t / 4 for t in one])
    gaps = [b - a for a, b in zip(one, one[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(1.0, rel=0.1)  # mean gap 1/rate


def test_rates_lie_evenly_strictly_between_the_synchronous_rate_and_the_maximum():
    assert rates_between(2.0, 10.0, 3) == pytest.approx([4.0, 6.0, 8.0])
    # parallel requests gained nothing: from half the synchronous rate up to it
    assert rates_between(6.0, 4.0, 3) == pytest.approx([3.75, 4.5, 5.25])
    # ...or little (2 cores, 4 slots: 5.75 one at a time, 5.89 at most): from half the maximum,
    # not four rates crowded between 5.75 and 5.89 that all saturate
    assert rates_between(5.75, 5.89, 4) == pytest.approx([3.534, 4.123, 4.712, 5.301])


def test_saturation_needs_both_a_lag_and_a_queue():
    assert saturated(sent=20, completed=10, slots=4)  # 10 < 0.9 x 20, 10 waiting > 2 x 4
    assert not saturated(sent=20, completed=13, slots=4)  # 7 waiting: a burst explains it
    assert not saturated(sent=100, completed=91, slots=2)  # 91 >= 90 answered


def _outcome(query, sent_s, latency_ms, text="ok"):
    return Outcome(query, sent_s, latency_ms, ttft_ms=latency_ms / 10, text=text)


def test_a_rates_figures_worked_by_hand():
    outcomes = [
        _outcome(0, 0.0, 100, "a"),
        _outcome(1, 0.5, 200, "b"),
        _outcome(2, 1.0, 300, "x"),
        _outcome(3, 1.5, 400, "d"),
        Outcome(4, 2.0, 2000, error="unanswered when the rate stopped"),
    ]
    gold = ["a", "b", "c", "d", "e"]
    row = rate_row(POISSON, 2.0, outcomes, 1000, lambda q, t: t == gold[q], {0: "a", 1: "other", 2: "x"})
    # answers end at 0.1, 0.7, 1.3 and 1.9 s: 4 answers over 1.9 s from the first send
    assert row.achieved_queries_per_s == pytest.approx(4 / 1.9)
    assert row.latency_p50_ms == pytest.approx(300)
    # p95 of [100, 200, 300, 400, 2000]: position 3.8, so 400 + 0.8 x 1600
    assert row.latency_p95_ms == pytest.approx(1680)
    assert row.ttft_p50_ms == pytest.approx(25)  # of 10, 20, 30, 40
    # 4 of 5 within 1000 ms; the Wilson 95% interval of 4/5 is 0.376-0.964
    assert row.goodput == pytest.approx(0.8)
    assert row.goodput_ci95 == pytest.approx([0.3755, 0.9638], abs=1e-3)
    assert row.goodput_queries_per_s == pytest.approx(4 / 1.9)
    assert row.accuracy == pytest.approx(3 / 5)  # a, b, d right; x wrong; the unanswered one wrong
    assert row.agreement == pytest.approx(2 / 3)  # queries 0 and 2 as in the synchronous pass, 1 not
    assert not row.saturated and row.answered == 4 and row.requests == 5


def _row(mode, offered, achieved, p95, saturated_=False, failed=0):
    return ServedRate(
        mode=mode,
        offered_queries_per_s=offered,
        achieved_queries_per_s=achieved,
        latency_p95_ms=p95,
        saturated=saturated_,
        requests=60,
        answered=60 - failed,
    )


def test_capacity_is_the_highest_rate_meeting_the_objective_with_its_interval():
    rows = [
        _row(SYNCHRONOUS, None, 2.0, 300),
        _row(THROUGHPUT, None, 10.0, 5000),
        _row(POISSON, 4.0, 3.9, 600),
        _row(POISSON, 6.0, 5.8, 900),
        _row(POISSON, 8.0, 7.0, 1500),
        _row(POISSON, 9.0, 7.5, 800, saturated_=True),  # a saturated rate fails whatever its p95
    ]
    assert capacity(rows, 1000) == (5.8, [5.8, 8.0])
    assert bisection_rate(rows, 1000) == pytest.approx(6.9)
    # every rate passes: the capacity lies below the maximum throughput
    assert capacity(rows[:4], 1000) == (5.8, [5.8, 10.0])
    assert bisection_rate(rows[:4], 1000) is None
    # even one request at a time misses the objective: no capacity, below the synchronous rate
    assert capacity(rows, 250) == (None, [0.0, 2.0])
    assert bisection_rate(rows, 250) is None
    # one at a time meets it, no Poisson rate does: no capacity, below the lowest rate tried
    assert capacity(rows, 500) == (None, [0.0, 4.0])
    # a rate whose quick failures keep its p95 low is no capacity: 6 q/s failed, 4 q/s is the best
    rows[3] = _row(POISSON, 6.0, 5.8, 200, failed=3)
    assert capacity(rows, 1000) == (3.9, [3.9, 6.0])


def test_a_rate_failing_below_the_best_widens_the_capacity_interval_down_to_it():
    """Near capacity the p95 of 60 requests is noisy: a lower rate that failed bounds the interval."""
    rows = [
        _row(SYNCHRONOUS, None, 5.75, 218),
        _row(THROUGHPUT, None, 5.89, 9822),
        _row(POISSON, 5.78, 4.92, 753),
        _row(POISSON, 5.84, 4.84, 1490),
        _row(POISSON, 5.86, 4.99, 823),
        _row(POISSON, 5.41, 4.53, 1348),
    ]
    assert capacity(rows, 1000) == (4.99, [4.53, 5.89])
    assert bisection_rate(rows, 1000) is None  # no failing rate above the best to bisect towards


def test_the_schedule_does_not_wait_for_answers():
    """Open loop: a slow server and a fast one are sent the same requests at the same instants."""
    arrivals = poisson_arrivals(20.0, 10, seed=1)

    def handler(seconds):
        async def reply(query):
            await asyncio.sleep(seconds)
            return 0.0, f"answer {query}", None

        return reply

    sent = {}
    for name, seconds in (("slow", 0.4), ("fast", 0.001)):
        outcomes, stop = asyncio.run(open_loop(arrivals, list(range(10)), handler(seconds), 10.0, None))
        assert stop is None and [o.text for o in outcomes] == [f"answer {q}" for q in range(10)]
        sent[name] = [o.sent_s for o in outcomes]
        assert sent[name] == pytest.approx(arrivals, abs=0.15)  # a loaded runner is late by ms, not by 0.4 s
    assert sent["slow"] == pytest.approx(sent["fast"], abs=0.15)


def test_a_rate_the_server_never_reaches_stops_early_as_saturated():
    async def never(query):
        await asyncio.sleep(60)

    arrivals = poisson_arrivals(100.0, 200, seed=0)
    outcomes, stop = asyncio.run(open_loop(arrivals, list(range(200)), never, 10.0, slots=2))
    assert stop.saturated and stop.reason.startswith("saturated") and len(outcomes) < 10  # stopped once 5 waited
    assert all(o.text is None and o.error and o.latency_ms >= 0 for o in outcomes)
    row = rate_row(POISSON, 100.0, outcomes, 1000, lambda q, t: True, {}, stop)
    assert row.saturated and row.goodput == 0 and row.achieved_queries_per_s is None


def test_the_server_reply_is_the_in_process_answer_text():
    chunks = [
        {"content": '{"intent": "refund'},
        {"content": '"'},
        {"content": "", "stop_type": "word", "stopping_word": "}"},
    ]
    assert reply_text(chunks) == '{"intent": "refund"}'
    assert reply_text([{"content": '{"in'}, {"content": "", "stop_type": "limit"}]) == '{"in'
    assert label_grammar([[90, 5], [90, 7, 8]]) == "root ::= <[90]> <[5]> | <[90]> <[7]> <[8]>"


def test_the_server_fields_key_a_record_only_when_the_load_is_served():
    """Records measured in process keep the keys they had before the served load existed."""
    from harness.errors import ConfigError
    from harness.measure.config import SERVED_LOAD_VERSION, MeasureConfig

    before = {
        "prompt_tokens", "gen_tokens", "warmup", "min_reps", "min_seconds", "decoding", "max_new_tokens",
        "max_eval_samples", "eval_batch_size", "latency_samples", "timeout_s", "batch_sizes", "concurrency",
        "slo_p95_ms",
    }  # fmt: skip
    assert set(MeasureConfig().keyed()) == before
    assert MeasureConfig(server_slots=8, load_seed=3).keyed() == MeasureConfig().keyed()
    assert MeasureConfig(serve="server", server_slots=8).keyed() != MeasureConfig(serve="server").keyed()
    # a served record's meaning is versioned apart: bumping it re-measures served rows only
    assert MeasureConfig(serve="server").keyed()["served_load_version"] == SERVED_LOAD_VERSION
    with pytest.raises(ConfigError, match="measure.serve='sever' is unknown"):
        MeasureConfig(serve="sever")
    with pytest.raises(ConfigError, match="measure.server_port=80"):
        MeasureConfig(server_port=80)


def test_a_slow_rate_cut_by_its_time_limit_is_not_saturated():
    """The time limit bounds a pass; only a queue that builds marks it saturated."""

    async def quick(query):
        await asyncio.sleep(0.001)
        return 0.0, "ok", None

    outcomes, stop = asyncio.run(open_loop(poisson_arrivals(10.0, 50, seed=0), list(range(50)), quick, 0.3, slots=2))
    assert stop.reason.startswith("still sending after 0.3 s") and not stop.saturated
    assert 1 <= len(outcomes) < 50 and all(o.text == "ok" for o in outcomes)
