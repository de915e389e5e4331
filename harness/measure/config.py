"""The `measure` group's schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import ConfigError

DECODINGS = ("free", "labels")


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
