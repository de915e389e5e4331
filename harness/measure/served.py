"""The served load measurement (`measure.serve=server`): the job's GGUF behind llama.cpp's
`llama-server`, sent the test queries as a serving team's load generator would send them.

The profile is GuideLLM's sweep: a synchronous pass (one request at a time: the lowest rate,
and the answers every later pass is compared with), a throughput pass (every request at once:
the highest rate the server reaches), then `measure.load_rates` Poisson rates evenly between
the two (`load.rates_between`), and one more halfway between the last rate that met the latency objective and the
first that did not. Each pass sends `measure.load_warmup_requests` first, left out of its
figures, then `measure.load_requests_per_rate`, cycling through the test queries in the same
order in every pass, so each answer can be paired with the synchronous one.

Requests go to the server's native `/completion` endpoint, streamed (time to first token is the
first streamed token), greedy, at most `measure.max_new_tokens` tokens, ended at the closed
JSON object as the in-process measurement ends them, and with `measure.decoding=labels` held
to the label set's answers by a grammar over token ids whose alternatives are exactly the
token sequences the in-process trie allows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from harness.measure.config import MeasureConfig
from harness.measure.load import (
    POISSON,
    SYNCHRONOUS,
    THROUGHPUT,
    Outcome,
    Stop,
    bisection_rate,
    capacity,
    poisson_arrivals,
    rate_row,
    rates_between,
    saturated,
)
from harness.measure.run import STOP
from harness.measure.server import ServerError
from harness.prompt import answer, parse_answer
from harness.record import ServedRate

log = logging.getLogger(__name__)
# (time to first token in s or None, the answer text or None, the error or None)
Reply = tuple[Optional[float], Optional[str], Optional[str]]
Handler = Callable[[int], Awaitable[Reply]]


def label_grammar(answers: list[list[int]]) -> str:
    """GBNF over token ids whose sentences are exactly the answers' token sequences, as the
    in-process trie holds them (`harness.runtimes.constrain`). A grammar over the answer strings
    would let the model spell an answer in other tokens (`{`, `"`, `i`, `n`, ...), which a weak
    model does, and then answer otherwise than in process."""
    return "root ::= " + " | ".join(" ".join(f"<[{t}]>" for t in tokens) for tokens in answers)


def answer_tokens(url: str, labels: list[str]) -> list[list[int]]:
    """Each label's answer in the server's own tokens, tokenized as the in-process runtime
    tokenizes it (no BOS, special tokens parsed)."""
    import httpx

    def tokens(text: str) -> list[int]:
        body = {"content": text, "add_special": False, "parse_special": True}
        response = httpx.post(f"{url}/tokenize", json=body, timeout=30)
        response.raise_for_status()
        return response.json()["tokens"]

    return [tokens(answer(label)) for label in labels]


def completion_body(prompt: str, cfg: MeasureConfig, grammar: Optional[str]) -> dict[str, Any]:
    """A streamed greedy `/completion` request. Stopping at "}" ends an answer where the
    in-process decoding ends it; the server leaves the stop string out of the text, and
    `reply_text` puts it back, so the text parses as the in-process one does."""
    body = {
        "prompt": prompt,
        "n_predict": cfg.max_new_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "seed": cfg.load_seed,
        "stop": [STOP],
        "stream": True,
    }
    return {**body, "grammar": grammar} if grammar else body


def reply_text(chunks: list[dict]) -> str:
    """The answer from a stream's chunks: their content, and the stop string where one ended it."""
    text = "".join(c.get("content", "") for c in chunks)
    last = chunks[-1] if chunks else {}
    return text + (last.get("stopping_word") or "") if last.get("stop_type") == "word" else text


async def ask(client, url: str, body: dict[str, Any]) -> Reply:
    """One streamed request; an HTTP or transport failure is the reply's error, not an exception."""
    import httpx

    t0 = time.perf_counter()
    ttft, chunks = None, []
    try:
        async with client.stream("POST", f"{url}/completion", json=body) as response:
            if response.status_code != 200:
                return None, None, f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[len("data: ") :])
                if ttft is None and chunk.get("content"):
                    ttft = time.perf_counter() - t0
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    return ttft, reply_text(chunks), None


async def _timed(handler: Handler, query: int, sent_s: float) -> Outcome:
    t0 = time.perf_counter()
    try:
        ttft_s, text, error = await handler(query)
    except Exception as exc:  # a malformed stream costs its request, not the pass
        ttft_s, text, error = None, None, f"{type(exc).__name__}: {exc}"
    ttft_ms = ttft_s * 1000 if ttft_s is not None else None
    return Outcome(query, sent_s, (time.perf_counter() - t0) * 1000, ttft_ms, text, error)


def _cut(limit_s: float, what: str) -> str:
    return f"{what} after {limit_s:g} s (measure.load_max_seconds_per_rate)"


async def closed_loop(queries: list[int], handler: Handler, limit_s: float) -> tuple[list[Outcome], Optional[Stop]]:
    """One request at a time, each sent when the last is answered (the synchronous pass)."""
    t0, out = time.perf_counter(), []
    for query in queries:
        now = time.perf_counter() - t0
        if now > limit_s:
            return out, Stop(_cut(limit_s, "still sending"), saturated=False)
        out.append(await _timed(handler, query, now))
    return out, None


async def open_loop(
    arrivals: list[float], queries: list[int], handler: Handler, limit_s: float, slots: Optional[int]
) -> tuple[list[Outcome], Optional[Stop]]:
    """Request i sent at `arrivals[i]` seconds from the start, answered or not the ones before
    (open loop); stopped early once `saturated` (given `slots`) or past `limit_s`, when the
    requests still out are cancelled and kept as unfinished. (outcomes, why it stopped early)."""
    t0, sent, stop = time.perf_counter(), [], None

    def queued() -> bool:
        answered = sum(task.done() for _, _, task in sent)
        return slots is not None and saturated(len(sent), answered, slots)

    for at, query in zip(arrivals, queries):
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
        now = time.perf_counter() - t0
        if now > limit_s:
            stop = Stop(_cut(limit_s, "still sending"), queued())
            break
        if queued():
            stop = Stop(
                f"saturated: {sum(t.done() for _, _, t in sent)} of {len(sent)} answered, the rest queued", True
            )
            break
        sent.append((query, now, asyncio.create_task(_timed(handler, query, now))))
    pending = [task for _, _, task in sent if not task.done()]
    if pending and stop is None:
        await asyncio.wait(pending, timeout=max(0.0, limit_s - (time.perf_counter() - t0)))
        if any(not task.done() for task in pending):
            stop = Stop(_cut(limit_s, "answers still outstanding"), queued())
    end = time.perf_counter() - t0
    outcomes = []
    for query, sent_s, task in sent:
        if task.done():
            outcomes.append(task.result())
        else:
            task.cancel()  # closing the stream frees the server's slot
            outcomes.append(Outcome(query, sent_s, (end - sent_s) * 1000, error="unanswered when the rate stopped"))
    await asyncio.gather(*(task for _, _, task in sent), return_exceptions=True)
    return outcomes, stop


class Profile:
    """The passes of one served load, on one client; `rows` the per-rate figures so far."""

    def __init__(self, handler: Handler, n_queries: int, labels: list[str], gold: list[str], cfg: MeasureConfig):
        self.handler, self.cfg = handler, cfg
        self.queries = [i % n_queries for i in range(cfg.load_warmup_requests + cfg.load_requests_per_rate)]
        self.gold, self.labels = gold, labels
        self.reference: dict[int, str] = {}
        self.rows: list[ServedRate] = []

    def correct(self, query: int, text: str) -> bool:
        return parse_answer(text, self.labels) == self.gold[query]

    def _add(self, mode: str, offered: Optional[float], outcomes: list[Outcome], stop: Optional[Stop]) -> ServedRate:
        measured = outcomes[self.cfg.load_warmup_requests :]
        if not measured:  # warm-up requests are never figures, however few the rest
            raise ServerError(
                f"served load, {mode} pass: no request after the {self.cfg.load_warmup_requests} warm-up ones "
                f"within measure.load_max_seconds_per_rate={self.cfg.load_max_seconds_per_rate:g} "
                f"({stop.reason if stop else 'none sent'}): raise it, or lower measure.load_warmup_requests"
            )
        row = rate_row(mode, offered, measured, self.cfg.slo_p95_ms, self.correct, self.reference, stop)
        self.rows.append(row)
        log.info(
            "served load, %s%s: %s q/s achieved, p95 %.0f ms, goodput %.2f, accuracy %.3f%s",
            mode,
            f" at {offered:.2f} q/s" if offered else "",
            f"{row.achieved_queries_per_s:.2f}" if row.achieved_queries_per_s else "no",
            row.latency_p95_ms,
            row.goodput,
            row.accuracy,
            f" ({stop.reason})" if stop else "",
        )
        return row

    async def run(self, between_passes: Callable[[], None]) -> list[ServedRate]:
        cfg, limit = self.cfg, self.cfg.load_max_seconds_per_rate
        outcomes, stop = await closed_loop(self.queries, self.handler, limit)
        self.reference = {o.query: o.text for o in outcomes if o.text is not None}
        synchronous = self._add(SYNCHRONOUS, None, outcomes, stop)
        if not synchronous.answered:  # no rate to build on: name what the server said
            raise ServerError(
                f"served load: the server answered none of {synchronous.requests} requests sent one at a "
                f"time: {'; '.join(synchronous.errors) or 'no error given'}"
            )
        low = synchronous.achieved_queries_per_s or 0.0
        between_passes()
        burst = [0.0] * len(self.queries)
        high = self._add(THROUGHPUT, None, *await open_loop(burst, self.queries, self.handler, limit, None))
        for rate in rates_between(low, high.achieved_queries_per_s or 0.0, cfg.load_rates):
            between_passes()
            await self.poisson(rate)
        middle = bisection_rate(self.rows, cfg.slo_p95_ms)
        if middle is not None:
            between_passes()
            await self.poisson(middle)
        return self.rows

    async def poisson(self, rate: float) -> ServedRate:
        arrivals = poisson_arrivals(rate, len(self.queries), self.cfg.load_seed)
        # a slow rate still sends every request (its p95 rests on all of them), and the last one
        # has twice the objective to be answered: only saturation cuts such a pass short
        limit = max(self.cfg.load_max_seconds_per_rate, arrivals[-1] + 2 * self.cfg.slo_p95_ms / 1000)
        outcomes, stop = await open_loop(arrivals, self.queries, self.handler, limit, self.cfg.server_slots)
        return self._add(POISSON, rate, outcomes, stop)


def load_client(connections: int, timeout_s: float):
    """An HTTP client for `connections` requests at once, a fresh connection each: llama-server
    closes a connection after a streamed reply, and one kept alive in a pool would fail the next
    request sent on it."""
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=0), timeout=timeout_s
    )


def run_profile(
    url: str, prompts: list[str], labels: list[str], gold: list[str], cfg: MeasureConfig, check
) -> list[ServedRate]:
    """Every pass of the profile against the server at `url`; `check()` runs between passes
    (it raises if the server died)."""
    grammar = label_grammar(answer_tokens(url, labels)) if cfg.decoding == "labels" else None
    bodies = [completion_body(p, cfg, grammar) for p in prompts]
    n = cfg.load_warmup_requests + cfg.load_requests_per_rate

    async def main() -> list[ServedRate]:
        async with load_client(n, cfg.load_max_seconds_per_rate + 30) as client:
            profile = Profile(lambda q: ask(client, url, bodies[q]), len(prompts), labels, gold, cfg)
            return await profile.run(check)

    return asyncio.run(main())


def measure_served(
    gguf: Path,
    prompts: list[str],
    gold: list[str],
    labels: list[str],
    cfg: MeasureConfig,
    threads: int,
    llama_cpp_bin: Optional[str],
    pid_dir: Path,
    out_dir: Path,
    in_process_capacity: Optional[float],
    gpu: bool = False,
) -> dict[str, Any]:
    """The served section of a record: the server started on the job's file, the profile run
    against it with the server's peak RSS sampled throughout, the server stopped."""
    from harness.measure.memory import PeakRSSSampler
    from harness.measure.server import LlamaServer, server_binary, server_version
    from harness.record import ServedLoad
    from harness.runtimes.llama_cpp import N_CTX

    binary = server_binary(llama_cpp_bin)
    server = LlamaServer(
        binary, gguf, threads, cfg.server_slots, N_CTX, pid_dir, out_dir / "llama-server.log",
        cfg.server_port, cfg.server_start_timeout_s, gpu,
    )  # fmt: skip
    with server, PeakRSSSampler(pid=server.proc.pid) as rss:
        rows = run_profile(server.url, prompts, labels, gold, cfg, lambda: server.check_running("under load"))
        server.check_running("under load")
    best, interval = capacity(rows, cfg.slo_p95_ms)
    return ServedLoad(
        slots=cfg.server_slots,
        server=server_version(binary),
        server_peak_rss_mib=rss.peak_mib,
        slo_p95_ms=cfg.slo_p95_ms,
        capacity_queries_per_s=best,
        capacity_interval_queries_per_s=interval,
        in_process_capacity_queries_per_s=in_process_capacity,
        capacity_fidelity=best / in_process_capacity if best and in_process_capacity else None,
        requests_per_rate=cfg.load_requests_per_rate,
        warmup_requests=cfg.load_warmup_requests,
        seed=cfg.load_seed,
        rates=rows,
    ).to_json()
