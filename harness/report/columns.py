"""How the report shows a record's figures: the one column spec every view reads.

Each column has a header and a cell format, the tables with a column for it, which way is
better (an objective a sweeper may optimise), the cell format of its 95% interval (the
record's `<key>_ci95`), and the short name of the Pareto frontier it names (`label` its
plots' axis). The terminal table, the Markdown / CSV / HTML report, the W&B summary and the
Optuna objectives all derive from `COLUMNS`; a figure the record adds is a column at once,
shown nowhere until a spec here says where.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from harness.record import SECTIONS, Record, is_figure

TERMINAL, REPORT = "terminal", "report"
Figure = Optional[float]


@dataclass(frozen=True)
class Column:
    key: str | tuple[str, ...]
    header: str
    fmt: str
    maximize: Optional[bool] = None
    shown: tuple[str, ...] = ()
    # the cell format of its 95% interval, where the record has one (`<key>_ci95`)
    ci: str = ""
    # a Pareto objective's short name (the frontier it names), and its plots' axis label
    frontier: str = ""
    label: str = ""
    # its figure in a record (None where the record lacks it); a derived column has none
    read: Optional[Callable[[Record], Figure]] = dataclasses.field(default=None, compare=False)
    # its 95% interval in a record, where `ci` says it has one
    read_ci95: Optional[Callable[[Record], Optional[list[float]]]] = dataclasses.field(default=None, compare=False)

    @property
    def name(self) -> str:
        """Its key, for a column of one figure."""
        assert isinstance(self.key, str)
        return self.key

    def interval_column(self) -> Column:
        """Its interval's column, shown where it is: the point's `<key>_ci95_low` / `_high`."""
        header = f"{self.header.split()[0]} 95% CI"
        return Column((f"{self.name}_ci95_low", f"{self.name}_ci95_high"), header, self.ci, None, self.shown)


def _spec(
    key: str,
    header: str,
    fmt: str,
    maximize: Optional[bool],
    shown: tuple[str, ...] = (),
    ci: str = "",
    frontier: str = "",
    label: str = "",
) -> Column:
    return Column(key, header, fmt, maximize, shown, ci, frontier, label or header)


# The metrics figures a view shows or a sweeper may optimise; every other figure is a column
# headed by its name.
_SPECS = {
    c.name: c
    for c in (
        _spec("accuracy", "accuracy", "{:.3f}", True, (TERMINAL, REPORT), ci="{:.2f}-{:.2f}", frontier="accuracy"),
        _spec("macro_f1", "macro-F1", "{:.3f}", True, (REPORT,)),
        _spec("invalid_rate", "invalid", "{:.3f}", False, (TERMINAL,)),
        _spec(
            "latency_p50_ms",
            "p50 ms",
            "{:.1f}",
            False,
            (TERMINAL, REPORT),
            frontier="latency",
            label="latency p50 (ms)",
        ),
        _spec("latency_p95_ms", "p95 ms", "{:.1f}", False),
        _spec("latency_p99_ms", "p99 ms", "{:.1f}", False),
        _spec("ttft_p50_ms", "TTFT p50 ms", "{:.1f}", False),
        _spec("queries_per_s", "queries/s", "{:.2f}", True),
        _spec("prefill_tokens_per_s", "prefill tok/s", "{:.0f}", True, (TERMINAL, REPORT)),
        _spec(
            "decode_tokens_per_s",
            "decode tok/s",
            "{:.1f}",
            True,
            (TERMINAL, REPORT),
            ci="{:.0f}-{:.0f}",
            frontier="speed",
            label="decode tokens/s",
        ),
        _spec("peak_rss_mib", "peak RSS MiB", "{:.0f}", False),
        _spec("peak_rss_over_baseline_mib", "RSS over baseline MiB", "{:.0f}", False, (REPORT,)),
        _spec("peak_vram_mib", "peak VRAM MiB", "{:.0f}", False),
        _spec(
            "energy_j_per_query",
            "J/query",
            "{:.3f}",
            False,
            (TERMINAL, REPORT),
            frontier="energy",
            label="energy per query (J)",
        ),
        _spec("energy_estimate_j_per_query", "est. J/query", "{:.3f}", False),
        _spec("cost_usd_per_query", "USD/query", "{:.5f}", False),
    )
}


def _reader(section: str, name: str) -> Callable[[Record], Any]:
    """What reads `name` of the record's metrics section `section`."""

    def read(record: Record) -> Any:
        return getattr(getattr(record.metrics, section), name)

    return read


def _metric_columns() -> list[Column]:
    out = []
    for section_name, section in SECTIONS.items():
        for f in dataclasses.fields(section):
            if not is_figure(f):
                continue
            spec = _SPECS.get(f.name) or _spec(f.name, f.name, "{:.3f}", None)
            ci95 = _reader(section_name, f"{f.name}_ci95") if spec.ci else None
            out.append(dataclasses.replace(spec, read=_reader(section_name, f.name), read_ci95=ci95))
    return out


_MEASURED = (
    Column("size_mib", "size MiB", "{:.0f}", False, (TERMINAL, REPORT), read=lambda r: r.artifact.size_mib),
    Column("bits_per_weight", "bits/weight", "{:.2f}", None, (REPORT,), read=lambda r: r.artifact.bits_per_weight),
    Column("quantize_wall_s", "quantize s", "{:.0f}", None, (), read=lambda r: r.artifact.quantize_wall_s),
    Column("train_wall_s", "train s", "{:.0f}", None, (), read=lambda r: r.train.train_wall_s if r.train else None),
    *_metric_columns(),
)
# Every scalar figure of a record, in table order. Derived ones (no reader) are computed by
# `report.records.point`: the intervals, and peak memory on the device the model runs on
# (VRAM on a GPU, RSS on a CPU).
COLUMNS: tuple[Column, ...] = (
    *_MEASURED,
    *(c.interval_column() for c in _MEASURED if c.ci),
    Column(
        "peak_memory_mib", "peak MiB", "{:.0f}", False, (TERMINAL, REPORT), frontier="memory", label="peak memory (MiB)"
    ),
)
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
        value = c.read(record) if c.read is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[c.name] = value
    return out
