"""The measurement of a hosted model: the same test split, prompt and accuracy code as every
local variant, plus what a hosted model costs: per-request latency under bounded concurrency,
tokens in and out as the endpoint counts them, and USD from the configured prices.

No speed test, memory or energy: a remote endpoint's prefill and decode rates, memory and
joules are not observable from here, and are reported as such (null, with the reason).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.measure.accuracy import classification_metrics
from harness.measure.config import MeasureConfig
from harness.measure.predictions import test_rows, write_predictions
from harness.measure.stats import percentile
from harness.prompt import messages, parse_answer
from harness.record import Accuracy, Cost, Energy, Latency, Metrics
from harness.runtimes.config import ApiConfig
from harness.runtimes.openai_compatible import Completion, EndpointError, OpenAICompatibleRuntime

REMOTE = "remote endpoint: not observable from this machine"
# This many requests failing in a row means the endpoint is down, not that queries are unlucky.
MAX_CONSECUTIVE_FAILURES = 10


def shots(data_dir: Path, k: int) -> list[tuple[str, str]]:
    """k worked examples from the training split, one intent after another."""
    from harness.data.dataset import read_split

    if k == 0:
        return []
    by_intent: dict[str, list[dict]] = {}
    for row in read_split(data_dir, "train"):
        by_intent.setdefault(row["intent"], []).append(row)
    rounds = zip(*by_intent.values())
    return [(r["text"], r["intent"]) for batch in rounds for r in batch][:k]


def ask_all(rt: OpenAICompatibleRuntime, rows: list[dict], system: str, examples: list) -> tuple[list, float]:
    """(every query's completion, in order, the pass's wall seconds), the endpoint's
    `concurrency` requests in flight.

    One request that fails after its retries costs that query, not the answers (and tokens)
    already paid for; a refusal no request escapes, or a dead endpoint, ends the pass."""
    from harness.live import track

    failures_in_a_row = [0]

    def ask(row: dict) -> Completion:
        t0 = time.perf_counter()
        try:
            done = rt.complete(messages(row["text"], system, examples))
        except EndpointError as exc:
            failures_in_a_row[0] += 1
            if exc.hopeless or failures_in_a_row[0] >= MAX_CONSECUTIVE_FAILURES:
                raise EndpointError(f"{exc} ({failures_in_a_row[0]} failed in a row: the pass is stopped)") from exc
            return Completion(text="", latency_s=time.perf_counter() - t0, tokens_in=0, tokens_out=0, error=str(exc))
        failures_in_a_row[0] = 0
        return done

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=rt.api.concurrency) as pool:
        done = list(track(pool.map(ask, rows), len(rows), f"evaluate ({rt.api.model_name})", "query"))
    return done, time.perf_counter() - t0


def hosted_metrics(
    api: ApiConfig, rows: list[dict], done: list, wall_s: float, predicted: list, labels: list[str]
) -> Metrics:
    """Accuracy, the service's latency over the requests it answered, tokens and cost; speed,
    memory and energy are not observable behind an endpoint (unmeasured)."""
    answered = [c for c in done if c.error is None]
    latencies_ms = [c.latency_s * 1000 for c in answered]
    tokens_in, tokens_out = sum(c.tokens_in for c in done), sum(c.tokens_out for c in done)
    cost = (tokens_in * api.usd_per_mtok_in + tokens_out * api.usd_per_mtok_out) / 1e6
    gold, languages = [r["intent"] for r in rows], [r["language"] for r in rows]
    return Metrics(
        accuracy=Accuracy(**classification_metrics(gold, predicted, languages, labels)),
        latency=Latency(
            latency_p50_ms=percentile(latencies_ms, 50),
            latency_p95_ms=percentile(latencies_ms, 95),
            latency_p99_ms=percentile(latencies_ms, 99),
            queries_per_s=len(done) / wall_s,
            concurrency=api.concurrency,
            mean_prompt_tokens=tokens_in / len(answered),
            mean_generated_tokens=tokens_out / len(answered),
        ),
        energy=Energy(energy_unmeasured_reason=REMOTE),
        cost=Cost(
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            cost_usd_per_query=cost / len(done),
            failed_requests=len(done) - len(answered),
        ),
    )


def measure_hosted(
    api: ApiConfig, cfg: MeasureConfig, data_dir: Path, system: str, labels: list[str], out_dir: Path
) -> dict:
    rows = test_rows(data_dir, cfg)
    rt = OpenAICompatibleRuntime(api, cfg.max_new_tokens)  # reachability: checked in the preflight
    done, wall_s = ask_all(rt, rows, system, shots(data_dir, api.few_shot))
    if all(c.error is not None for c in done):
        raise EndpointError(f"all {len(done)} requests failed; the first: {done[0].error}")
    predicted = [parse_answer(c.text, labels) if c.error is None else None for c in done]
    latencies = [c.latency_s * 1000 if c.error is None else None for c in done]
    write_predictions(out_dir, rows, [c.text for c in done], predicted, latencies, [c.error for c in done])
    return {
        "runtime": {"name": rt.name, "version": rt.version, "base_url": api.base_url, "model_name": api.model_name},
        "metrics": hosted_metrics(api, rows, done, wall_s, predicted, labels).flat(),
    }
