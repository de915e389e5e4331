"""The result record: typed sections, and the one column spec every view reads.

A record's figures are grouped in sections (accuracy, latency, speed, memory, energy, cost),
each a dataclass whose fields carry their column spec in their metadata: the header and
format of a table cell, whether a sweeper may optimise the figure and in which direction,
and which tables show it. The terminal table, the Markdown / CSV / HTML report, the W&B
summary and the Optuna objectives all derive from `COLUMNS`; renaming a figure is renaming
one field.

`record.json` keeps the layout it always had (`metrics` is the sections' fields, flat), so
records written before these types existed read the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from harness.sources import BUILT, FILE, UNBUILT_VARIANT, model_kind

TERMINAL, REPORT = "terminal", "report"
# What a record means: bumped whenever the measurement changes what a figure measures, so
# records of older measurement code are measured again rather than reused. 2: the measuring
# process holds only its runtime (no torch beside llama.cpp); RSS before load and over it.
# 3: measure.max_eval_samples spreads its queries over the split (it took the first ones).
# 4: transformers' batched accuracy pass runs the prompts' shared prefix once, as llama.cpp's
# does (its queries/s change, and batch rounding may flip a near tie). 5: a load curve
# (measure.concurrency) runs beside the accuracy pass, inside its memory window; a CPU job's
# processes see no GPU; VRAM and torch peaks per phase.
MEASURE_VERSION = 5


def figure(
    header: str = "",
    fmt: str = "{:.3f}",
    maximize: Optional[bool] = None,
    shown: tuple[str, ...] = (),
    default: Any = None,
    ci: str = "",
    frontier: str = "",
    label: str = "",
) -> Any:
    """A record field with its column spec. `maximize`: an objective a sweeper may optimise
    (True: higher is better, False: lower); `shown`: the tables with a column for it; `ci`:
    the cell format of its 95% interval (the record's `<name>_ci95`), shown beside it;
    `frontier`: the short name of a Pareto objective (`label` its plots' axis)."""
    spec = {"header": header, "fmt": fmt, "maximize": maximize, "shown": shown, "ci": ci, "frontier": frontier}
    return field(default=default, metadata={**spec, "label": label or header})


def detail(default_factory=None) -> Any:
    """A record field that is not a scalar figure (per-language breakdowns, matrices, shapes)."""
    return field(default_factory=default_factory or dict, metadata={"detail": True})


@dataclass
class Accuracy:
    n_samples: Optional[int] = figure()
    accuracy: Optional[float] = figure(
        "accuracy", "{:.3f}", True, (TERMINAL, REPORT), ci="{:.2f}-{:.2f}", frontier="accuracy"
    )
    accuracy_ci95: Optional[list] = detail(list)
    macro_f1: Optional[float] = figure("macro-F1", "{:.3f}", True, (REPORT,))
    invalid_rate: Optional[float] = figure("invalid", "{:.3f}", False, (TERMINAL,))
    # Where the accuracy pass is batched: the share of the batch-1 pass's queries whose
    # batched answer is the same text (kernels summing in another order can flip a near tie).
    batch_agreement: Optional[float] = figure()
    accuracy_by_language: dict = detail()
    f1_by_intent: dict = detail()
    confusion: dict = detail()


@dataclass
class Latency:
    latency_p50_ms: Optional[float] = figure(
        "p50 ms", "{:.1f}", False, (TERMINAL, REPORT), frontier="latency", label="latency p50 (ms)"
    )
    latency_p95_ms: Optional[float] = figure("p95 ms", "{:.1f}", False)
    latency_p99_ms: Optional[float] = figure("p99 ms", "{:.1f}", False)
    ttft_p50_ms: Optional[float] = figure("TTFT p50 ms", "{:.1f}", False)
    queries_per_s: Optional[float] = figure("queries/s", "{:.2f}", True)
    latency_samples: Optional[int] = figure()
    eval_batch_size: Optional[int] = figure()
    accuracy_pass_queries_per_s: Optional[float] = figure()
    mean_prompt_tokens: Optional[float] = figure()
    mean_generated_tokens: Optional[float] = figure()
    # hosted: requests in flight at once
    concurrency: Optional[int] = figure()
    # Throughput, p50/p95 latency, accuracy and agreement with batch 1 at each level of
    # measure.concurrency: [{"concurrency", "queries_per_s", "latency_p50_ms", ...}]
    load_curve: list = detail(list)


@dataclass
class Speed:
    prefill_tokens_per_s: Optional[float] = figure("prefill tok/s", "{:.0f}", True, (TERMINAL, REPORT))
    prefill_tokens_per_s_std: Optional[float] = figure()
    # 95% interval of the median over the repetitions
    prefill_tokens_per_s_ci95: Optional[list] = detail(list)
    decode_tokens_per_s: Optional[float] = figure(
        "decode tok/s",
        "{:.1f}",
        True,
        (TERMINAL, REPORT),
        ci="{:.0f}-{:.0f}",
        frontier="speed",
        label="decode tokens/s",
    )
    decode_tokens_per_s_std: Optional[float] = figure()
    decode_tokens_per_s_ci95: Optional[list] = detail(list)
    decode_tokens_per_s_by_batch: dict = detail()
    speed_reps: dict = detail()
    speed_shape: dict = detail()


@dataclass
class Memory:
    # The serving footprint: the measuring process's peak RSS, which holds the runtime and
    # its libraries (named in the record's runtime.process_held), as a server of it would.
    peak_rss_mib: Optional[float] = figure("peak RSS MiB", "{:.0f}", False)
    # RSS just before the model loads (interpreter and measurement code), and the peak above it.
    rss_before_load_mib: Optional[float] = figure()
    peak_rss_over_baseline_mib: Optional[float] = figure("RSS over baseline MiB", "{:.0f}", False, (REPORT,))
    accuracy_pass_peak_rss_mib: Optional[float] = figure()
    model_mib: Optional[float] = figure()
    load_s: Optional[float] = figure()
    # On a CUDA job: this process's peak VRAM where NVML lists the process ("nvml_process"),
    # else the device's used memory, every process's ("nvml_device_used"); vram_note says why
    # a figure is missing or device-wide. Over the load, batch-1 and speed phases, as RSS.
    peak_vram_mib: Optional[float] = figure("peak VRAM MiB", "{:.0f}", False)
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
class Energy:
    energy_j: Optional[float] = figure()
    energy_j_per_query: Optional[float] = figure(
        "J/query", "{:.3f}", False, (TERMINAL, REPORT), frontier="energy", label="energy per query (J)"
    )
    energy_j_per_token: Optional[float] = figure()
    energy_method: Optional[str] = None
    energy_unmeasured_reason: Optional[str] = None
    eval_cpu_s: Optional[float] = figure()
    # An estimate, never a measurement: in its own fields, named for its method.
    energy_estimate_j_per_query: Optional[float] = figure("est. J/query", "{:.3f}", False)
    energy_estimate_method: Optional[str] = None


@dataclass
class Cost:
    tokens_in: Optional[int] = figure()
    tokens_out: Optional[int] = figure()
    cost_usd: Optional[float] = figure()
    cost_usd_per_query: Optional[float] = figure("USD/query", "{:.5f}", False)
    # Requests that still failed after their retries: scored as invalid answers, their errors
    # in predictions.jsonl.
    failed_requests: Optional[int] = figure()


SECTIONS = (Accuracy, Latency, Speed, Memory, Energy, Cost)


@dataclass
class ServedLoad:
    """A record's `served` section (measure.serve=server): the artifact behind llama.cpp's
    server under open-loop load (harness.measure.served). Its own section, not metrics: the
    in-process figures stay what they are, and this sits beside them."""

    slots: int  # the server's parallel slots
    server: str  # llama-server's version line and a digest of its build
    # The server process's peak RSS over the whole load: the row's memory as served.
    server_peak_rss_mib: float
    slo_p95_ms: float  # the objective the capacity (and the bisected rate) was measured at
    # The highest achieved Poisson rate whose p95 met the objective (None: none did), and the
    # interval it lies in: [that rate, or the lowest that failed below it; the lowest rate above it
    # that failed, or the highest reached].
    capacity_queries_per_s: Optional[float]
    capacity_interval_queries_per_s: list
    # The in-process static-batch capacity at the same objective, and served over it.
    in_process_capacity_queries_per_s: Optional[float]
    capacity_fidelity: Optional[float]
    requests_per_rate: int  # measured requests per rate, warm-up excluded
    warmup_requests: int
    seed: int
    # One row per pass, in the order run (harness.measure.load.rate_row): mode (synchronous,
    # throughput, poisson), offered and achieved queries/s, TTFT and latency p50/p95/p99 ms,
    # goodput with its Wilson interval, goodput queries/s, accuracy, agreement with the
    # synchronous answers, saturated and why.
    rates: list = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Metrics:
    accuracy: Accuracy = field(default_factory=Accuracy)
    latency: Latency = field(default_factory=Latency)
    speed: Speed = field(default_factory=Speed)
    memory: Memory = field(default_factory=Memory)
    energy: Energy = field(default_factory=Energy)
    cost: Cost = field(default_factory=Cost)

    def flat(self) -> dict[str, Any]:
        """As `record.json` holds them: every section's fields in one mapping."""
        return {k: v for s in dataclasses.fields(self) for k, v in dataclasses.asdict(getattr(self, s.name)).items()}


@dataclass(frozen=True)
class Column:
    key: str | tuple[str, ...]
    header: str
    fmt: str
    maximize: Optional[bool] = None
    shown: tuple[str, ...] = ()
    # where a record holds it: (section of record.json, field)
    source: Optional[tuple[str, str]] = None
    # the cell format of its 95% interval, where the record has one (`<key>_ci95`)
    ci: str = ""
    # a Pareto objective's short name (the frontier it names), and its plots' axis label
    frontier: str = ""
    label: str = ""

    def read(self, record: Record) -> Any:
        """Its figure in a record (None where the record lacks it); a derived column has none."""
        assert self.source is not None
        section, name = self.source
        return (getattr(record, section) or {}).get(name)

    def interval_column(self) -> "Column":
        """Its interval's column, shown where it is: the point's `<key>_ci95_low` / `_high`."""
        assert isinstance(self.key, str) and self.ci
        header = f"{self.header.split()[0]} 95% CI"
        return Column((f"{self.key}_ci95_low", f"{self.key}_ci95_high"), header, self.ci, None, self.shown)


def _metric_columns() -> list[Column]:
    return [
        Column(
            f.name,
            f.metadata["header"] or f.name,
            f.metadata["fmt"],
            f.metadata["maximize"],
            f.metadata["shown"],
            ("metrics", f.name),
            f.metadata["ci"],
            f.metadata["frontier"],
            f.metadata["label"] or f.name,
        )
        for section in SECTIONS
        for f in dataclasses.fields(section)
        if "header" in f.metadata
    ]


_MEASURED = (
    Column("size_mib", "size MiB", "{:.0f}", False, (TERMINAL, REPORT), ("artifact", "size_mib")),
    Column("bits_per_weight", "bits/weight", "{:.2f}", None, (REPORT,), ("artifact", "bits_per_weight")),
    Column("quantize_wall_s", "quantize s", "{:.0f}", None, (), ("artifact", "quantize_wall_s")),
    Column("train_wall_s", "train s", "{:.0f}", None, (), ("train", "train_wall_s")),
    *_metric_columns(),
)
# Every scalar figure of a record, in table order. Derived ones (no source) are computed by
# `report.records.point`: the intervals, and peak memory on the device the model runs on
# (VRAM on a GPU, RSS on a CPU).
COLUMNS: tuple[Column, ...] = (
    *_MEASURED,
    *(c.interval_column() for c in _MEASURED if c.ci),
    Column(
        "peak_memory_mib", "peak MiB", "{:.0f}", False, (TERMINAL, REPORT), frontier="memory", label="peak memory (MiB)"
    ),
)
# The figures with a 95% interval, by key.
INTERVALS = tuple(c.key for c in _MEASURED if c.ci)
_ORDER = (
    "size_mib",
    "bits_per_weight",
    "accuracy",
    "accuracy_ci95_low",
    "macro_f1",
    "invalid_rate",
    "decode_tokens_per_s",
    "decode_tokens_per_s_ci95_low",
    "prefill_tokens_per_s",
    "latency_p50_ms",
    "peak_memory_mib",
    "peak_rss_over_baseline_mib",
    "energy_j_per_query",
)


def _rank(c: Column) -> int:
    key = c.key[0] if isinstance(c.key, tuple) else c.key
    return _ORDER.index(key) if key in _ORDER else len(_ORDER)


def shown_in(view: str) -> list[Column]:
    """The columns a table shows, in the order readers expect (size, accuracy, speed,
    latency, memory, energy)."""
    return sorted((c for c in COLUMNS if view in c.shown), key=_rank)


# The Pareto objectives (each column with a frontier name), in that order, by name.
FRONTIERS: dict[str, Column] = {c.frontier: c for c in sorted(COLUMNS, key=_rank) if c.frontier}


# Figures a sweeper may optimise -> True to maximise, False to minimise.
OBJECTIVES: dict[str, bool] = {c.key: c.maximize for c in COLUMNS if isinstance(c.key, str) and c.maximize is not None}


def scalar_figures(record: Record) -> dict[str, float]:
    """Every scalar figure a record holds, by column key (for W&B's summary)."""
    out = {}
    for c in COLUMNS:
        if c.source is None:
            continue
        value = c.read(record)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[c.key] = value
    return out


@dataclass
class JobInfo:
    """What a job ran, as every view names it: the same block in ok, failed and skipped records."""

    model: Optional[str]
    quant: Optional[str]
    format: Optional[str]
    bits: Optional[int]
    gguf_type: Optional[str]
    hardware: Optional[str]
    train: Optional[str]
    # How answers were decoded: free, or within the label set (measure.decoding).
    decoding: Optional[str]
    languages: list[str]

    @classmethod
    def from_config(cls, resolved: dict[str, Any]) -> "JobInfo":
        """From a resolved job config (plain dicts), valid or not: a field it lacks is None."""
        quant = resolved.get("quant") or {}
        model = resolved.get("model") or {}
        kind = model_kind(model.get("source")) or BUILT
        built = kind == BUILT
        return cls(
            # a model file is named for the file, so a sweep over files tells them apart
            model=Path(model["path"]).stem if kind == FILE and model.get("path") else model.get("name"),
            quant=quant.get("name") if built else UNBUILT_VARIANT[kind],
            format=quant.get("format") if built else None,
            bits=quant.get("bits") if built else None,
            gguf_type=quant.get("gguf_type") if built else None,
            train=(resolved.get("train") or {}).get("name") if built else "none",
            hardware=(resolved.get("hardware") or {}).get("name"),
            decoding=(resolved.get("measure") or {}).get("decoding"),
            languages=sorted((resolved.get("language") or {}).get("codes") or {}),
        )


def job_label(job: dict[str, Any]) -> str:
    """model_variant_train, as a record's `job` block names them: W&B run names, run directories."""
    return f"{job.get('model')}_{job.get('quant')}_{job.get('train')}"


# A job that produced a record, a job that failed, and a sweep cell that does not exist
# (a format at a width it lacks), skipped at composition with the reason.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# Where a job's record is written: its run directory, and the cache entry it came from; every
# test query's answer beside it in the cache entry.
RECORD = "record.json"
PREDICTIONS = "predictions.jsonl"


@dataclass(kw_only=True)
class Record:
    """A `record.json`: a measured job's (status ok), or a failed or skipped one's (its error).
    The pipeline writes it into the record's cache entry; the copy in each job's run directory
    adds `record_dir`, that entry. Every reader takes it as this type (`Record.read`), so a
    key an older file lacks reads as empty rather than as a KeyError somewhere in a report."""

    status: str = OK
    job: dict[str, Any]  # JobInfo
    config: dict[str, Any] = field(default_factory=dict)  # the resolved job config
    # a measured job's
    runtime: dict[str, Any] = field(default_factory=dict)  # what served: name, version, kernel, devices seen
    metrics: dict[str, Any] = field(default_factory=dict)  # Metrics.flat()
    artifact: dict[str, Any] = field(default_factory=dict)  # format, size, bits/weight, tool, digest
    train: Optional[dict[str, Any]] = None  # the fine-tune's facts and loss curve; None: not trained
    keys: dict[str, str] = field(default_factory=dict)  # each stage's cache key, the record's own last
    lineage: list[dict[str, str]] = field(default_factory=list)  # each stage's output, upstream first
    machine: Optional[dict[str, Any]] = None  # the measuring machine's identity; None: an endpoint
    bandwidth: Optional[dict[str, Any]] = None  # that machine's measured memory bandwidth
    served: Optional[dict[str, Any]] = None  # ServedLoad; None: measured in process only
    environment: dict[str, Any] = field(default_factory=dict)  # host, Python, packages, commit
    measure_version: Optional[int] = None
    started_at: Optional[str] = None
    measure_wall_s: Optional[float] = None
    record_dir: Optional[str] = None
    # an unfinished job's
    error_type: Optional[str] = None
    error: Optional[str] = None
    failed_at: Optional[str] = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Record":
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})

    @classmethod
    def read(cls, path: Path) -> "Record":
        # imported here: the measuring process imports this module for the metric sections,
        # and holds nothing it does not use
        from harness.store import read_json

        return cls.from_json(read_json(path))

    def to_json(self) -> dict[str, Any]:
        """As the file holds it: a measured record without the unfinished fields and the other
        way round; `record_dir` only once it is known, `served` only where the load was served."""
        unfinished = ("error_type", "error", "failed_at")
        drop = {k for k in ("record_dir", "served") if getattr(self, k) is None}
        if self.status == OK:
            drop.update(unfinished)
        else:
            drop.update(
                f.name for f in dataclasses.fields(self) if f.name not in {"status", "job", "config", *unfinished}
            )
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in drop}

    def config_value(self, section: str, key: str) -> Any:
        """`config.<section>.<key>`, None where the record's config lacks it."""
        return (self.config.get(section) or {}).get(key)


_RECORD_FIELDS = {f.name for f in dataclasses.fields(Record)}


def unfinished_record(status: str, resolved: dict[str, Any], exc: BaseException) -> Record:
    return Record(
        status=status,
        error_type=type(exc).__name__,
        error=str(exc),
        job=dataclasses.asdict(JobInfo.from_config(resolved)),
        config=resolved,
        failed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
