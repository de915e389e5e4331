"""The `measure` group's schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from harness.errors import ConfigError

DECODINGS = ("free", "labels")
SERVES = ("in_process", "server")
# What a served record means, in its key beside MEASURE_VERSION (in-process records keep
# theirs): bumped when the served load changes a figure. 2: where parallel slots less than
# double the rate, the Poisson rates start at half the maximum; the capacity interval reaches
# down to a rate that failed below the best.
SERVED_LOAD_VERSION = 2
# The fields of a served load measurement (measure.serve=server): a record's key holds them
# only then, so records measured in process keep the keys they had.
SERVER_FIELDS = (
    "serve",
    "server_slots",
    "server_port",
    "server_start_timeout_s",
    "load_rates",
    "load_requests_per_rate",
    "load_warmup_requests",
    "load_seed",
    "load_max_seconds_per_rate",
)


@dataclass
class MeasureConfig:
    # Fixed-shape speed test, as llama-bench's pp/tg: prefill prompt_tokens, decode gen_tokens.
    prompt_tokens: int = 64
    gen_tokens: int = 32
    warmup: int = 1
    min_reps: int = 3
    min_seconds: float = 2.0
    # free: greedy decoding, the model writes what it likes (and may write no valid answer);
    # labels: greedy within the label set's answers (a token trie, as a grammar would), the
    # fair way to ask a zero-shot model that was never taught the answer format.
    decoding: str = "free"
    # Longest answer the evaluator lets the model write; {"intent": "..."} fits well within.
    max_new_tokens: int = 16
    # 0 = the whole test split; else this many queries spread evenly over it (the split is
    # ordered by intent and language, so every cell is sampled once there are as many queries).
    max_eval_samples: int = 0
    # The accuracy pass decodes this many queries at once on runtimes that batch
    # (transformers: padded batches; llama.cpp: parallel sequences, as its server's slots).
    eval_batch_size: int = 32
    # Per-query latency, time to first token and energy come from a batch-1 pass: over the
    # whole test split where the accuracy pass is itself batch 1, else over this many queries.
    latency_samples: int = 100
    # The measurement runs in a spawned process; this bounds it.
    timeout_s: float = 1800.0
    # Decode throughput at these batch sizes too, for runtimes that batch (transformers);
    # others report null for sizes above 1.
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    # Capacity under load: the batch-1 pass's queries answered again this many at a time (a
    # static batch per level, each query waiting for its batch), on runtimes that batch;
    # throughput, p50/p95 latency, accuracy and agreement with batch 1 at each level.
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    # The latency objective: capacity is the highest throughput whose p95 stays under it.
    slo_p95_ms: float = 1000.0
    # in_process: capacity from the static batches above, inside the measuring process.
    # server: also the GGUF behind llama.cpp's llama-server (`make llama-server`), loaded with
    # open-loop Poisson arrivals at a sweep of rates, as a serving team would load it.
    serve: str = "in_process"
    # The server's parallel slots (continuous batching across them).
    server_slots: int = 4
    # A loopback port for the server; None: a free one, picked at start.
    server_port: Optional[int] = None
    # How long the server may take to load the model and answer /health.
    server_start_timeout_s: float = 120.0
    # Poisson rates between the synchronous rate (or half the maximum, where parallel requests
    # less than double it) and the maximum throughput (GuideLLM's sweep).
    load_rates: int = 4
    # Requests each rate's figures rest on, warm-up excluded: 60 puts 3 requests above the
    # p95 (60 x 5%), so the p95 is not one outlier; fewer is allowed for tests.
    load_requests_per_rate: int = 60
    # Requests each rate sends first and leaves out of its figures (slots and caches filling).
    load_warmup_requests: int = 4
    # Seeds every rate's arrival times: the same config sends at the same instants.
    load_seed: int = 0
    # A pass still running after this long stops (a Poisson rate gets at least until its last
    # request is due plus twice the objective); requests still out count as unanswered.
    load_max_seconds_per_rate: float = 60.0

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ConfigError(f"measure.decoding={self.decoding!r} is unknown; choose one of: {', '.join(DECODINGS)}")
        for name in ("prompt_tokens", "gen_tokens", "min_reps", "max_new_tokens", "eval_batch_size", "latency_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"measure.{name} must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("measure.batch_sizes must be a non-empty list of sizes >= 1, e.g. [1,8,32]")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError("measure.concurrency must be a non-empty list of levels >= 1, e.g. [1,4,16]")
        if self.slo_p95_ms <= 0:
            raise ConfigError("measure.slo_p95_ms must be > 0 (milliseconds)")
        self._check_server_fields()

    def _check_server_fields(self) -> None:
        if self.serve not in SERVES:
            raise ConfigError(f"measure.serve={self.serve!r} is unknown; choose one of: {', '.join(SERVES)}")
        for name in ("server_slots", "load_rates", "load_requests_per_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"measure.{name} must be >= 1")
        if self.load_warmup_requests < 0:
            raise ConfigError("measure.load_warmup_requests must be >= 0")
        if self.load_max_seconds_per_rate <= 0 or self.server_start_timeout_s <= 0:
            raise ConfigError("measure.load_max_seconds_per_rate and measure.server_start_timeout_s must be > 0")
        if self.server_port is not None and not 1024 <= self.server_port <= 65535:
            raise ConfigError(
                f"measure.server_port={self.server_port}: choose an unprivileged port (1024-65535), "
                "or null for a free one"
            )

    def keyed(self) -> dict:
        """What a record's key holds of this config: the server fields only when the load is
        served (where the latency objective steers the measurement too: see `served`)."""
        fields = dataclasses.asdict(self)
        if self.serve == "server":
            return {**fields, "served_load_version": SERVED_LOAD_VERSION}
        return {k: v for k, v in fields.items() if k not in SERVER_FIELDS}
