"""The result record: what a `record.json` holds, as types.

A record is a measured (or failed, or skipped) job. Its sections are dataclasses: what the job
ran (`JobInfo`), what served it (`Runtime`), the artifact, the machine, and the figures
(`Metrics`: accuracy, latency, speed, memory, energy, cost). How a figure is shown (its
header, format, the tables with a column for it, the frontier it names) is the report's
(`harness.report.columns`); this module is the schema alone and imports nothing of the harness.

`record.json` keeps the layout it always had (`metrics` is the sections' fields, flat), and a
record reads and writes back as it was: `Section.from_json` keeps what a file held that a type
does not name, and which fields it lacked.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Self, TypeVar

# What a record means: bumped whenever the measurement changes what a figure measures, so
# records of older measurement code are measured again rather than reused. 2: the measuring
# process holds only its runtime (no torch beside llama.cpp); RSS before load and over it.
# 3: measure.max_eval_samples spreads its queries over the split (it took the first ones).
# 4: transformers' batched accuracy pass runs the prompts' shared prefix once, as llama.cpp's
# does (its queries/s change, and batch rounding may flip a near tie). 5: a load curve
# (measure.concurrency) runs beside the accuracy pass, inside its memory window; a CPU job's
# processes see no GPU; VRAM and torch peaks per phase.
MEASURE_VERSION = 5


def figure() -> Any:
    """A scalar figure of a metrics section: a column of every view, unmeasured (None) until set."""
    return field(default=None, metadata={"figure": True})


def is_figure(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("figure"))


@dataclass
class Section:
    """A section of `record.json` as a type. What a file's section held that the type does not
    name (a format's own facts in `artifact`, a figure since renamed) is kept in `other`, and
    the fields it lacked (added after it was written) in `absent`: a record read and written
    back is the file it was."""

    # the fields that hold sections, or lists of them, by name: rebuilt by from_json
    NESTED: ClassVar[dict[str, type[Section]]] = {}

    other: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    absent: frozenset[str] = field(default=frozenset(), kw_only=True, repr=False, compare=False)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The fields a file holds, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BOOKKEEPING)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        names = cls.names()
        known = {k: _rebuilt(cls.NESTED.get(k), v) for k, v in data.items() if k in names}
        other = {k: v for k, v in data.items() if k not in names}
        return cls(**known, other=other, absent=frozenset(n for n in names if n not in data))

    def to_json(self) -> dict[str, Any]:
        """As the file holds it."""
        out = {n: _plain(getattr(self, n)) for n in self.names() if n not in self.absent}
        return {**out, **self.other}


_BOOKKEEPING = ("other", "absent")
S = TypeVar("S", bound=Section)


def _rebuilt(section: Optional[type[Section]], value: Any) -> Any:
    if section is None or value is None:
        return value
    if isinstance(value, list):
        return [section.from_json(v) for v in value]
    return section.from_json(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_json()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class LoadLevel(Section):
    """One level of the in-process load curve (measure.concurrency): that many queries in
    flight, their throughput and latency, accuracy and agreement with the batch-1 answers."""

    concurrency: Optional[int] = None
    queries_per_s: Optional[float] = None
    latency_p50_ms: Optional[float] = None
    latency_p95_ms: Optional[float] = None
    accuracy: Optional[float] = None
    agreement: Optional[float] = None


@dataclass
class Accuracy(Section):
    n_samples: Optional[int] = figure()
    accuracy: Optional[float] = figure()
    accuracy_ci95: Optional[list[float]] = field(default_factory=list)
    macro_f1: Optional[float] = figure()
    invalid_rate: Optional[float] = figure()
    # Where the accuracy pass is batched: the share of the batch-1 pass's queries whose
    # batched answer is the same text (kernels summing in another order can flip a near tie).
    batch_agreement: Optional[float] = figure()
    accuracy_by_language: dict[str, float] = field(default_factory=dict)
    f1_by_intent: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class Latency(Section):
    NESTED = {"load_curve": LoadLevel}

    latency_p50_ms: Optional[float] = figure()
    latency_p95_ms: Optional[float] = figure()
    latency_p99_ms: Optional[float] = figure()
    ttft_p50_ms: Optional[float] = figure()
    queries_per_s: Optional[float] = figure()
    latency_samples: Optional[int] = figure()
    eval_batch_size: Optional[int] = figure()
    accuracy_pass_queries_per_s: Optional[float] = figure()
    mean_prompt_tokens: Optional[float] = figure()
    mean_generated_tokens: Optional[float] = figure()
    # hosted: requests in flight at once
    concurrency: Optional[int] = figure()
    # Throughput, p50/p95 latency, accuracy and agreement with batch 1 at each level of
    # measure.concurrency.
    load_curve: list[LoadLevel] = field(default_factory=list)


@dataclass
class Speed(Section):
    prefill_tokens_per_s: Optional[float] = figure()
    prefill_tokens_per_s_std: Optional[float] = figure()
    # 95% interval of the median over the repetitions
    prefill_tokens_per_s_ci95: Optional[list[float]] = field(default_factory=list)
    decode_tokens_per_s: Optional[float] = figure()
    decode_tokens_per_s_std: Optional[float] = figure()
    decode_tokens_per_s_ci95: Optional[list[float]] = field(default_factory=list)
    decode_tokens_per_s_by_batch: dict[str, Optional[float]] = field(default_factory=dict)
    speed_reps: dict[str, int] = field(default_factory=dict)
    speed_shape: dict[str, int] = field(default_factory=dict)


@dataclass
class Memory(Section):
    # The serving footprint: the measuring process's peak RSS, which holds the runtime and
    # its libraries (named in the record's runtime.process_held), as a server of it would.
    peak_rss_mib: Optional[float] = figure()
    # RSS just before the model loads (interpreter and measurement code), and the peak above it.
    rss_before_load_mib: Optional[float] = figure()
    peak_rss_over_baseline_mib: Optional[float] = figure()
    accuracy_pass_peak_rss_mib: Optional[float] = figure()
    model_mib: Optional[float] = figure()
    load_s: Optional[float] = figure()
    # On a CUDA job: this process's peak VRAM where NVML lists the process ("nvml_process"),
    # else the device's used memory, every process's ("nvml_device_used"); vram_note says why
    # a figure is missing or device-wide. Over the load, batch-1 and speed phases, as RSS.
    peak_vram_mib: Optional[float] = figure()
    vram_method: Optional[str] = None
    vram_note: Optional[str] = None
    peak_device_vram_mib: Optional[float] = figure()
    device_vram_before_mib: Optional[float] = figure()
    # torch's own peaks over the same phases (the runtimes on transformers)
    torch_peak_allocated_mib: Optional[float] = figure()
    torch_peak_reserved_mib: Optional[float] = figure()
    # The batched accuracy pass's own peaks, apart (its padded batches are not serving's).
    accuracy_pass_peak_vram_mib: Optional[float] = figure()
    accuracy_pass_torch_peak_allocated_mib: Optional[float] = figure()


@dataclass
class Energy(Section):
    energy_j: Optional[float] = figure()
    energy_j_per_query: Optional[float] = figure()
    energy_j_per_token: Optional[float] = figure()
    energy_method: Optional[str] = None
    energy_unmeasured_reason: Optional[str] = None
    eval_cpu_s: Optional[float] = figure()
    # An estimate, never a measurement: in its own fields, named for its method.
    energy_estimate_j_per_query: Optional[float] = figure()
    energy_estimate_method: Optional[str] = None


@dataclass
class Cost(Section):
    tokens_in: Optional[int] = figure()
    tokens_out: Optional[int] = figure()
    cost_usd: Optional[float] = figure()
    cost_usd_per_query: Optional[float] = figure()
    # Requests that still failed after their retries: scored as invalid answers, their errors
    # in predictions.jsonl.
    failed_requests: Optional[int] = figure()


# Metrics' sections by name, in table order.
SECTIONS: dict[str, type[Section]] = {
    "accuracy": Accuracy,
    "latency": Latency,
    "speed": Speed,
    "memory": Memory,
    "energy": Energy,
    "cost": Cost,
}


@dataclass
class Metrics:
    """Every figure of a measured record, by section; `record.json` holds them flat."""

    accuracy: Accuracy = field(default_factory=Accuracy)
    latency: Latency = field(default_factory=Latency)
    speed: Speed = field(default_factory=Speed)
    memory: Memory = field(default_factory=Memory)
    energy: Energy = field(default_factory=Energy)
    cost: Cost = field(default_factory=Cost)
    # what a file's metrics held that no section names (a figure since renamed), kept as read
    other: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def sections(self) -> tuple[Section, ...]:
        return (self.accuracy, self.latency, self.speed, self.memory, self.energy, self.cost)

    def flat(self) -> dict[str, Any]:
        """As `record.json` holds them: every section's fields in one mapping."""
        return {k: v for s in self.sections() for k, v in s.to_json().items()} | self.other

    @classmethod
    def from_flat(cls, data: Mapping[str, Any]) -> Metrics:
        def part(section: type[S]) -> S:
            names = set(section.names())
            return section.from_json({k: v for k, v in data.items() if k in names})

        named = {n for s in SECTIONS.values() for n in s.names()}
        other = {k: v for k, v in data.items() if k not in named}
        return cls(part(Accuracy), part(Latency), part(Speed), part(Memory), part(Energy), part(Cost), other)


@dataclass
class ServedRate(Section):
    """One pass of a served load (harness.measure.load.rate_row), in the order run: its mode
    (synchronous, throughput, poisson), offered and achieved queries/s, TTFT and latency
    percentiles, goodput with its Wilson interval, accuracy, agreement with the synchronous
    answers, and whether (and why) it saturated."""

    mode: Optional[str] = None
    offered_queries_per_s: Optional[float] = None
    achieved_queries_per_s: Optional[float] = None
    requests: Optional[int] = None
    answered: Optional[int] = None
    saturated: bool = False
    stop_reason: Optional[str] = None
    goodput: Optional[float] = None
    goodput_ci95: list[float] = field(default_factory=list)
    goodput_queries_per_s: Optional[float] = None
    accuracy: Optional[float] = None
    agreement: Optional[float] = None
    errors: list[str] = field(default_factory=list)
    latency_p50_ms: Optional[float] = None
    latency_p95_ms: Optional[float] = None
    latency_p99_ms: Optional[float] = None
    ttft_p50_ms: Optional[float] = None
    ttft_p95_ms: Optional[float] = None
    ttft_p99_ms: Optional[float] = None


@dataclass
class ServedLoad(Section):
    """A record's `served` section (measure.serve=server): the artifact behind llama.cpp's
    server under open-loop load (harness.measure.served). Its own section, not metrics: the
    in-process figures stay what they are, and this sits beside them."""

    NESTED = {"rates": ServedRate}

    # Every field defaults, as in every section: a file written before a field was added reads
    # with it `absent`, never as a TypeError.

    slots: Optional[int] = None  # the server's parallel slots
    server: Optional[str] = None  # llama-server's version line and a digest of its build
    # The server process's peak RSS over the whole load: the row's memory as served.
    server_peak_rss_mib: Optional[float] = None
    slo_p95_ms: Optional[float] = None  # the objective the capacity (and the bisected rate) was measured at
    # The highest achieved Poisson rate whose p95 met the objective (None: none did), and the
    # interval it lies in: [that rate, or the lowest that failed below it; the lowest rate above it
    # that failed, or the highest reached].
    capacity_queries_per_s: Optional[float] = None
    capacity_interval_queries_per_s: list[float] = field(default_factory=list)
    # The in-process static-batch capacity at the same objective, and served over it.
    in_process_capacity_queries_per_s: Optional[float] = None
    capacity_fidelity: Optional[float] = None
    requests_per_rate: Optional[int] = None  # measured requests per rate, warm-up excluded
    warmup_requests: Optional[int] = None
    seed: Optional[int] = None
    rates: list[ServedRate] = field(default_factory=list)  # one per pass, in the order run


@dataclass
class JobInfo(Section):
    """What a job ran, as every view names it: the same block in ok, failed and skipped records
    (built from the job's config by `harness.job_info`)."""

    model: Optional[str] = None
    quant: Optional[str] = None
    format: Optional[str] = None
    bits: Optional[int] = None
    gguf_type: Optional[str] = None
    hardware: Optional[str] = None
    train: Optional[str] = None
    # How answers were decoded: free, or within the label set (measure.decoding).
    decoding: Optional[str] = None
    languages: list[str] = field(default_factory=list)


def job_label(job: JobInfo) -> str:
    """model_variant_train, as a record's `job` block names them: W&B run names, run directories."""
    return f"{job.model}_{job.quant}_{job.train}"


@dataclass
class Runtime(Section):
    """What served the measurement: the runtime's name and version, and, in process, its threads,
    the kernel its library picked, the libraries the measuring process held, the devices it
    saw and the measurement window; behind an endpoint, its URL and model."""

    name: Optional[str] = None  # a record older than this name lacks it
    version: Optional[str] = None
    threads: Optional[int] = None
    kernel: Optional[str] = None
    kernel_choice: Optional[dict[str, Any]] = None
    process_held: Optional[list[str]] = None
    devices: Optional[list[str]] = None
    cuda_visible_devices: Optional[str] = None
    measure_window: Optional[dict[str, Any]] = None
    base_url: Optional[str] = None
    model_name: Optional[str] = None


@dataclass
class Artifact(Section):
    """What was measured: its format, size and bits per weight, the tool that wrote it, and
    the time quantizing took; each format's own facts (GGUF type, parameters, ...) in `other`."""

    format: Optional[str] = None
    size_mib: Optional[float] = None
    bits_per_weight: Optional[float] = None
    quantize_wall_s: Optional[float] = None
    tool: Optional[str] = None
    tool_version: Optional[str] = None
    weights_origin: Optional[str] = None


@dataclass
class Cpu(Section):
    model: Optional[str] = None
    flags: list[str] = field(default_factory=list)


@dataclass
class Gpu(Section):
    name: Optional[str] = None
    memory_mib: Optional[float] = None
    driver: Optional[str] = None
    cuda_driver: Optional[str] = None


@dataclass
class Machine(Section):
    """The measuring machine's identity (harness.measure.machine.machine_identity)."""

    NESTED = {"cpu": Cpu, "gpu": Gpu}

    cpu: Cpu = field(default_factory=Cpu)
    logical_cores: Optional[int] = None
    ram_gib: Optional[int] = None
    gpu: Optional[Gpu] = None


@dataclass
class Bandwidth(Section):
    """That machine's measured memory bandwidth (harness.measure.bandwidth)."""

    gb_per_s: Optional[float] = None
    method: Optional[str] = None


@dataclass
class Train(Section):
    """The fine-tune's facts: how it computed, its loss curve and wall time; the rest (steps,
    validation, adapter key, ...) in `other`."""

    precision: Optional[str] = None
    loss: list[float] = field(default_factory=list)
    train_wall_s: Optional[float] = None


@dataclass
class Environment(Section):
    """Where and when it was measured: the commit and the time; host, Python and packages in `other`."""

    git_commit: Optional[str] = None
    measured_at: Optional[str] = None


@dataclass
class Keys(Section):
    """Each stage's cache key; the record's own, and its test data's, by name."""

    record: Optional[str] = None
    dataset: Optional[str] = None


@dataclass
class Link(Section):
    """One stage's output in a record's lineage."""

    stage: str = ""
    key: str = ""
    path: str = ""


@dataclass
class Prediction(Section):
    """One test query's line of `predictions.jsonl`, beside the record: the query (its text,
    language, intent and phrasing template; the dataset's other columns in `other`), the
    model's raw answer and its parse, whether it was right, and its batch-1 latency or the
    error of a request that failed."""

    text: str = ""
    language: str = ""
    intent: Optional[str] = None
    # the phrasing the query was written from (synthetic data): queries sharing it are not independent
    template_id: Optional[str] = None
    raw_answer: Optional[str] = None
    predicted: Optional[str] = None
    correct: bool = False
    latency_ms: Optional[float] = None
    error: Optional[str] = None


# A job that produced a record, a job that failed, and a sweep cell that does not exist
# (a format at a width it lacks), skipped at composition with the reason.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# Where a job's record is written: its run directory, and the cache entry it came from; every
# test query's answer beside it in the cache entry.
RECORD = "record.json"
PREDICTIONS = "predictions.jsonl"


def _empty(section: type[S]) -> Any:
    """A section a file lacks: written back lacking every field, as `{}`."""
    return field(default_factory=lambda: section.from_json({}))


@dataclass(kw_only=True)
class Record:
    """A `record.json`: a measured job's (status ok), or a failed or skipped one's (its error).
    The pipeline writes it into the record's cache entry; the copy in each job's run directory
    adds `record_dir`, that entry. Every reader takes it as this type (`Record.read`), so a
    key an older file lacks reads as empty rather than as a KeyError somewhere in a report."""

    status: str = OK
    job: JobInfo = _empty(JobInfo)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved job config
    # a measured job's
    runtime: Runtime = _empty(Runtime)
    metrics: Metrics = field(default_factory=lambda: Metrics.from_flat({}))
    artifact: Artifact = _empty(Artifact)
    train: Optional[Train] = None  # None: not trained
    keys: Keys = _empty(Keys)  # the record's own key last
    lineage: list[Link] = field(default_factory=list)  # each stage's output, upstream first
    machine: Optional[Machine] = None  # None: an endpoint
    bandwidth: Optional[Bandwidth] = None
    served: Optional[ServedLoad] = None  # None: measured in process only
    environment: Environment = _empty(Environment)
    measure_version: Optional[int] = None
    started_at: Optional[str] = None
    measure_wall_s: Optional[float] = None
    record_dir: Optional[str] = None
    # an unfinished job's
    error_type: Optional[str] = None
    error: Optional[str] = None
    failed_at: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        kept = {k: v for k, v in data.items() if k in _RECORD_FIELDS}
        typed = {k: _rebuilt(_RECORD_SECTIONS.get(k), v) for k, v in kept.items() if k != "metrics"}
        if "metrics" in kept:
            typed["metrics"] = Metrics.from_flat(kept["metrics"])
        return cls(**typed)

    @classmethod
    def read(cls, path: Path) -> Record:
        # json.load, not harness.store.read_json: the schema imports nothing of the harness
        with open(path) as f:
            return cls.from_json(json.load(f))

    def to_json(self) -> dict[str, Any]:
        """As the file holds it: a measured record without the unfinished fields and the other
        way round; `record_dir` only once it is known, `served` only where the load was served."""
        unfinished = ("error_type", "error", "failed_at")
        drop = {k for k in ("record_dir", "served") if getattr(self, k) is None}
        if self.status == OK:
            drop.update(unfinished)
        else:
            drop.update(n for n in _RECORD_FIELDS if n not in {"status", "job", "config", *unfinished})
        values = {n: getattr(self, n) for n in _RECORD_FIELDS if n not in drop}
        return {k: v.flat() if isinstance(v, Metrics) else _plain(v) for k, v in values.items()}

    def config_value(self, section: str, key: str) -> Any:
        """`config.<section>.<key>`, None where the record's config lacks it."""
        return (self.config.get(section) or {}).get(key)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))
# The record's fields that hold sections (`metrics` is flat in the file: Metrics.from_flat).
_RECORD_SECTIONS: dict[str, type[Section]] = {
    "job": JobInfo,
    "runtime": Runtime,
    "artifact": Artifact,
    "train": Train,
    "keys": Keys,
    "lineage": Link,
    "machine": Machine,
    "bandwidth": Bandwidth,
    "served": ServedLoad,
    "environment": Environment,
}


def unfinished_record(status: str, job: JobInfo, resolved: dict[str, Any], exc: BaseException) -> Record:
    """A failed or skipped job's record. `job` comes from the caller (`harness.job_info`):
    naming a job needs its model's kind, which the schema does not import."""
    return Record(
        status=status,
        error_type=type(exc).__name__,
        error=str(exc),
        job=job,
        config=resolved,
        failed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
