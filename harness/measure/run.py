"""The measurement of one artifact on one runtime, meant to run in a fresh process.

Phases: load (peak RSS from here on); a batch-1 pass (per-query latency, time to first
token, energy); a fixed-shape speed test in the manner of llama-bench (prefill
`prompt_tokens`, decode `gen_tokens`, repeated until a minimum count and duration, median
and standard deviation reported); and, where the runtime batches, the accuracy pass over
the test split in batches (elsewhere the batch-1 pass covers the whole split and is the
accuracy pass).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from harness.data.dataset import spread
from harness.hardware import HardwareConfig
from harness.measure.accuracy import classification_metrics
from harness.measure.config import MeasureConfig
from harness.measure.energy import EnergyMeter, EnergyReading, cpu_time_estimate_j
from harness.measure.memory import GpuMemoryTracker, PeakRSSSampler
from harness.measure.predictions import test_rows, write_predictions
from harness.measure.stats import median_interval, median_std, percentile
from harness.prompt import answer, parse_answer
from harness.record import Accuracy, Energy, Latency, LoadLevel, Memory, Metrics, Speed
from harness.runtimes import BatchingRuntime, Opener, Runtime, answer_ends
from harness.runtimes.constrain import AnswerTrie

# A neutral filler for the fixed-shape speed test; its tokens, repeated, make any length.
_FILLER = "The quick brown fox jumps over the lazy dog while the shop ships orders to every city. "
_MAX_REPS = 200
# Libraries that weigh in a process's memory; a record names those its measurement held.
HEAVY_LIBRARIES = (
    "torch",
    "transformers",
    "gptqmodel",
    "bitsandbytes",
    "torchao",
    "llama_cpp",
    "onnxruntime_genai",
    "onnx",
    "openvino",
    "openvino_genai",
    "openvino_tokenizers",
    "nncf",
    "openai",
)


@dataclass
class MeasureSpec:
    artifact: str
    # The test split's prompts, rendered with the model's chat template before the
    # measurement starts: the measuring process holds the runtime, not the tokenizer library.
    prompts: list[str]
    data_dir: str
    opener: Opener
    hardware: HardwareConfig
    measure: MeasureConfig
    threads: int
    system: str
    labels: list[str]
    out_dir: str


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    latency_s: float


# Where an answer ends: the JSON object is closed.
STOP = "}"


def label_trie(rt: Runtime, labels: list[str], max_new_tokens: int) -> AnswerTrie:
    """The answers `measure.decoding=labels` allows, in the runtime's own tokens; each must fit
    in `max_new_tokens`, or a right answer would be cut and scored invalid."""
    from harness.errors import ConfigError

    trie = AnswerTrie([rt.tokenize(answer(label)) for label in labels], rt.eos_ids)
    if trie.longest > max_new_tokens:
        raise ConfigError(
            f"the longest answer is {trie.longest} tokens, more than measure.max_new_tokens="
            f"{max_new_tokens}: set measure.max_new_tokens={trie.longest}"
        )
    return trie


def greedy_answer(rt: Runtime, prompt_ids: list[int], max_new_tokens: int, trie: Optional[AnswerTrie] = None) -> Answer:
    """Greedy decoding until end of turn, a closed JSON object, or max_new_tokens; within
    the trie's answers when one is given."""
    t0 = time.perf_counter()
    token = rt.start(prompt_ids, trie.allowed([]) if trie else None)
    ttft = time.perf_counter() - t0
    produced: list[int] = []
    while True:
        produced.append(token)
        if answer_ends(rt, token, len(produced), max_new_tokens, STOP):
            break
        token = rt.step(token, trie.allowed(produced) if trie else None)
    latency = time.perf_counter() - t0
    text_ids = [t for t in produced if t not in rt.eos_ids]
    return Answer(rt.detokenize(text_ids), len(prompt_ids), len(produced), ttft, latency)


def batched_answers(
    rt: BatchingRuntime,
    prompts: list[list[int]],
    batch_size: int,
    max_new_tokens: int,
    trie: Optional[AnswerTrie] = None,
) -> list[str]:
    """Answers to every prompt, `batch_size` at a time; prompts of similar length share a
    batch (less padding), answers come back in the prompts' order."""
    from harness.live import Progress

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    with Progress(len(prompts), f"evaluate ({rt.name}, batch {batch_size})", "query") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, ids in zip(chunk, rt.generate_batch([prompts[i] for i in chunk], max_new_tokens, STOP, trie)):
                texts[i] = rt.detokenize(ids)
            bar.update(len(chunk))
    return texts


def _interleaved(runs: list[Callable[[], float]], cfg: MeasureConfig) -> list[list[float]]:
    """Seconds of each repetition of each run, the runs taking turns (so a machine whose speed
    drifts slows them alike), after `cfg.warmup` discarded rounds; each run gets at least
    `cfg.min_reps` and together they take at least `cfg.min_seconds` per run."""
    for _ in range(cfg.warmup):
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    started = time.perf_counter()
    while len(times[0]) < _MAX_REPS and (
        len(times[0]) < cfg.min_reps or time.perf_counter() - started < cfg.min_seconds * len(runs)
    ):
        for run, out in zip(runs, times):
            out.append(run())
    return times


def _repeat(run_once: Callable[[], float], cfg: MeasureConfig) -> list[float]:
    """Seconds of each repetition of one run, after `cfg.warmup` discarded ones."""
    return _interleaved([run_once], cfg)[0]


def _batched_decode(rt, first: list[int], size: int, gen_tokens: int) -> float:
    tokens = rt.start_batch([first] * size)
    t0 = time.perf_counter()
    for _ in range(gen_tokens):
        tokens = rt.step_batch(tokens)
    return time.perf_counter() - t0


def speed_test(rt: Runtime, cfg: MeasureConfig) -> Speed:
    filler = rt.tokenize(_FILLER)
    prompt = (filler * (cfg.prompt_tokens // len(filler) + 1))[: cfg.prompt_tokens]

    def prefill() -> float:
        t0 = time.perf_counter()
        rt.start(prompt)
        return time.perf_counter() - t0

    def decode() -> float:
        token = rt.start(prompt[:1])
        t0 = time.perf_counter()
        for _ in range(cfg.gen_tokens):
            token = rt.step(token)
        return time.perf_counter() - t0

    pp_s, tg_s = _interleaved([prefill, decode], cfg)
    pp = [cfg.prompt_tokens / s for s in pp_s]
    tg = [cfg.gen_tokens / s for s in tg_s]
    pp_median, pp_std = median_std(pp)
    tg_median, tg_std = median_std(tg)
    by_batch: dict[str, float | None] = {}
    for size in cfg.batch_sizes:
        if size == 1:
            by_batch["1"] = tg_median
        elif isinstance(rt, BatchingRuntime):
            seconds = _repeat(lambda n=size: _batched_decode(rt, prompt[:1], n, cfg.gen_tokens), cfg)
            by_batch[str(size)] = median_std([size * cfg.gen_tokens / s for s in seconds])[0]
        else:
            by_batch[str(size)] = None  # this runtime decodes one sequence at a time
    return Speed(
        decode_tokens_per_s_by_batch=by_batch,
        prefill_tokens_per_s=pp_median,
        prefill_tokens_per_s_std=pp_std,
        prefill_tokens_per_s_ci95=median_interval(pp),
        decode_tokens_per_s=tg_median,
        decode_tokens_per_s_std=tg_std,
        decode_tokens_per_s_ci95=median_interval(tg),
        speed_reps={"prefill": len(pp), "decode": len(tg)},
        speed_shape={"prompt_tokens": cfg.prompt_tokens, "gen_tokens": cfg.gen_tokens},
    )


def load_curve(
    rt: Runtime,
    prompts: list[list[int]],
    timed: list[int],
    answers: list[Answer],
    levels: list[int],
    max_new_tokens: int,
    trie: Optional[AnswerTrie],
    correct: Callable[[int, str], bool],
) -> list[LoadLevel]:
    """Throughput, latency and accuracy at each concurrency level, over the batch-1 pass's
    queries (`timed`, answered as `answers`). Level 1 is that pass; a higher level answers the
    same queries that many at a time, each batch static (a query waits for its whole batch, as
    it would on a server that batches without admitting new requests mid-batch); runtimes that
    cannot batch have level 1 only. `agreement`: the share of answers equal to batch 1's."""
    from harness.live import Progress

    def level(concurrency: int, texts: list[str], latencies_ms: list[float], seconds: float) -> LoadLevel:
        return LoadLevel(
            concurrency=concurrency,
            queries_per_s=len(texts) / seconds,
            latency_p50_ms=percentile(latencies_ms, 50),
            latency_p95_ms=percentile(latencies_ms, 95),
            accuracy=sum(correct(i, t) for i, t in zip(timed, texts)) / len(texts),
            agreement=sum(t == a.text for t, a in zip(texts, answers)) / len(texts),
        )

    curve = []
    if 1 in levels:
        curve.append(
            level(
                1, [a.text for a in answers], [a.latency_s * 1000 for a in answers], sum(a.latency_s for a in answers)
            )
        )
    if not isinstance(rt, BatchingRuntime):
        return curve
    for concurrency in sorted(set(levels) - {1}):
        texts: list[str] = []
        latencies_ms: list[float] = []
        seconds = 0.0  # a batch's queries are served together: the level's time is its batches'
        with Progress(len(timed), f"load ({rt.name}, {concurrency} at a time)", "query") as bar:
            for start in range(0, len(timed), concurrency):
                chunk = timed[start : start + concurrency]
                t0 = time.perf_counter()
                ids = rt.generate_batch([prompts[i] for i in chunk], max_new_tokens, STOP, trie)
                waited = time.perf_counter() - t0
                seconds += waited
                texts += [rt.detokenize(x) for x in ids]
                latencies_ms += [waited * 1000] * len(chunk)
                bar.update(len(chunk))
        curve.append(level(concurrency, texts, latencies_ms, seconds))
    return curve


def held_libraries() -> list[str]:
    """The heavy libraries this process has imported: what the measured footprint includes."""
    return sorted(name for name in HEAVY_LIBRARIES if name in sys.modules)


@dataclass
class Served:
    """What the serving window measured: the model loaded, the batch-1 pass and the speed test,
    with the process's peak memory over them (a server's footprint)."""

    rt: Runtime
    prompts: list[list[int]]
    trie: Optional[AnswerTrie]
    batch: int  # the accuracy pass's batch size (1 where the runtime cannot batch)
    timed: list[int]  # the queries of the batch-1 pass
    answers: list[Answer]
    eval_cpu_s: float
    energy: EnergyReading
    speed: Speed
    memory: Memory


def serve(spec: MeasureSpec, rss_before_load: float) -> Served:
    """Load the artifact, answer the batch-1 queries (energy and CPU time over them), run the
    speed test; memory sampled throughout."""
    import psutil

    from harness.live import track

    process = psutil.Process()
    spec.opener.prepare_kernels(spec.hardware)  # a one-time kernel build is not the load's time
    max_new = spec.measure.max_new_tokens
    with PeakRSSSampler() as rss, GpuMemoryTracker(spec.hardware.device) as vram:
        t0 = time.perf_counter()
        rt = spec.opener.open(Path(spec.artifact), spec.hardware, spec.threads)
        load_s = time.perf_counter() - t0
        prompts = [rt.tokenize(text) for text in spec.prompts]
        trie = label_trie(rt, spec.labels, max_new) if spec.measure.decoding == "labels" else None
        greedy_answer(rt, prompts[0], max_new, trie)  # warm-up
        batch = spec.measure.eval_batch_size if isinstance(rt, BatchingRuntime) else 1
        everyone = list(range(len(prompts)))
        timed = everyone if batch == 1 else spread(everyone, spec.measure.latency_samples)
        cpu_before = process.cpu_times()
        with EnergyMeter(spec.hardware.device) as energy:
            label = f"{'evaluate' if batch == 1 else 'latency'} ({rt.name}, batch 1)"
            answers = [greedy_answer(rt, prompts[i], max_new, trie) for i in track(timed, len(timed), label, "query")]
        cpu_after = process.cpu_times()
        speed = speed_test(rt, spec.measure)
    memory = replace(
        vram.report(),
        peak_rss_mib=rss.peak_mib,
        rss_before_load_mib=rss_before_load,
        peak_rss_over_baseline_mib=rss.peak_mib - rss_before_load,
        model_mib=rt.model_mib,
        load_s=load_s,
    )
    eval_cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return Served(rt, prompts, trie, batch, timed, answers, eval_cpu_s, energy.reading, speed, memory)


def accuracy_pass(
    spec: MeasureSpec, served: Served, rows: list[dict]
) -> tuple[list[str], float, list[LoadLevel], Memory]:
    """(every query's answer, the pass's seconds, the load curve, the serving window's memory
    with the pass's own peaks beside it).

    It comes after the serving window, outside it (torch's peaks included: they were read as
    that window closed): its padded batches would charge a serving-at-batch-1 footprint with
    memory it never needs."""
    s, max_new = served, spec.measure.max_new_tokens

    def correct(i: int, text: str) -> bool:
        return parse_answer(text, spec.labels) == rows[i]["intent"]

    def curve() -> list[LoadLevel]:
        return load_curve(s.rt, s.prompts, s.timed, s.answers, spec.measure.concurrency, max_new, s.trie, correct)

    if s.batch == 1:
        return [a.text for a in s.answers], sum(a.latency_s for a in s.answers), curve(), s.memory
    with PeakRSSSampler() as rss, GpuMemoryTracker(spec.hardware.device) as vram:
        t0 = time.perf_counter()
        texts = batched_answers(s.rt, s.prompts, s.batch, max_new, s.trie)
        seconds = time.perf_counter() - t0
        load = curve()
    figures = vram.report()
    memory = replace(
        s.memory,
        accuracy_pass_peak_rss_mib=rss.peak_mib,
        accuracy_pass_peak_vram_mib=figures.peak_vram_mib,
        accuracy_pass_torch_peak_allocated_mib=figures.torch_peak_allocated_mib,
    )
    return texts, seconds, load, memory


def latency_section(s: Served, n_queries: int, accuracy_pass_s: float, curve: list[LoadLevel]) -> Latency:
    latencies_ms = [a.latency_s * 1000 for a in s.answers]
    return Latency(
        latency_p50_ms=percentile(latencies_ms, 50),
        latency_p95_ms=percentile(latencies_ms, 95),
        latency_p99_ms=percentile(latencies_ms, 99),
        ttft_p50_ms=percentile([a.ttft_s * 1000 for a in s.answers], 50),
        queries_per_s=len(s.answers) / sum(a.latency_s for a in s.answers),
        latency_samples=len(s.answers),
        eval_batch_size=s.batch,
        accuracy_pass_queries_per_s=n_queries / accuracy_pass_s,
        load_curve=curve,
        mean_prompt_tokens=sum(a.prompt_tokens for a in s.answers) / len(s.answers),
        mean_generated_tokens=sum(a.generated_tokens for a in s.answers) / len(s.answers),
    )


def energy_section(s: Served, watts_per_core: Optional[float]) -> Energy:
    """Measured energy where a counter was read; an estimate only where asked for, apart."""
    joules, n = s.energy.joules, len(s.answers)
    generated = sum(a.generated_tokens for a in s.answers)
    estimate = cpu_time_estimate_j(s.eval_cpu_s, watts_per_core) if watts_per_core else None
    return Energy(
        energy_j=joules,
        energy_j_per_query=joules / n if joules is not None else None,
        energy_j_per_token=joules / generated if joules is not None else None,
        energy_method=s.energy.method,
        energy_unmeasured_reason=s.energy.reason,
        eval_cpu_s=s.eval_cpu_s,
        energy_estimate_j_per_query=estimate / n if estimate is not None else None,
        energy_estimate_method=f"cpu_time_x_{watts_per_core:g}W_per_core" if watts_per_core else None,
    )


def measure_artifact(spec: MeasureSpec) -> dict:
    """The whole measurement: serving window, accuracy pass and load curve, then the record's
    runtime and metrics sections; every answer written to predictions.jsonl."""
    import psutil

    rows = test_rows(Path(spec.data_dir), spec.measure)
    assert len(rows) == len(spec.prompts), "the prompts were rendered from another test split"
    served = serve(spec, psutil.Process().memory_info().rss / 2**20)
    texts, accuracy_pass_s, curve, memory = accuracy_pass(spec, served, rows)
    timed, answers = served.timed, served.answers
    agreement = None if served.batch == 1 else sum(texts[i] == a.text for i, a in zip(timed, answers)) / len(answers)
    predictions = [parse_answer(text, spec.labels) for text in texts]
    latency_of = {i: a.latency_s * 1000 for i, a in zip(timed, answers)}
    write_predictions(Path(spec.out_dir), rows, texts, predictions, [latency_of.get(i) for i in range(len(rows))])
    gold, languages = [r["intent"] for r in rows], [r["language"] for r in rows]
    metrics = Metrics(
        accuracy=Accuracy(
            **classification_metrics(gold, predictions, languages, spec.labels), batch_agreement=agreement
        ),
        latency=latency_section(served, len(rows), accuracy_pass_s, curve),
        speed=served.speed,
        memory=memory,
        energy=energy_section(served, spec.hardware.cpu_watts_per_core),
    )
    rt = served.rt
    runtime = {
        "name": rt.name,
        "version": rt.version,
        "threads": spec.threads,
        "kernel": rt.kernel,
        "kernel_choice": rt.kernel_choice,
        "process_held": held_libraries(),
        "devices": rt.devices,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    # as record.json holds them: the result crosses to the job's process as JSON
    return {"runtime": runtime, "metrics": metrics.flat()}
