"""The table a team choosing a model reads: is each variant as good as the baseline, in every
language, and what does serving it cost? One row per variant of one hardware group: the
paired comparison with the baseline (flips, exact McNemar p, the cluster-bootstrap interval
of the difference, the verdict), the non-inferiority gate overall and per language, capacity
under the latency objective, dollars per million queries at the configured machine price, and
decode speed as a share of the measured memory bandwidth. The same rows feed the terminal,
the report and the committed results pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from harness.errors import ConfigError
from harness.record import Record, Section, ServedRate
from harness.report.compare import FAIL, INCONCLUSIVE, Comparison, compare
from harness.report.config import ReportConfig
from harness.report.pareto import baseline_index
from harness.report.records import Point, read_predictions
from harness.report.serving import bandwidth_share, break_even_queries_per_month, capacity_at, usd_per_million_queries

# A decision row: one row of a results CSV (harness.report.results), which a page renders again;
# a CSV written before a column was added lacks it, so a row is read by key, never assumed whole.
Row = dict[str, Any]


def baseline_of(compared: list[Point], cfg: ReportConfig) -> Optional[int]:
    if cfg.baseline is None:
        return baseline_index(compared)
    names = [p.variant for p in compared]
    if cfg.baseline not in names:
        raise ConfigError(f"report.baseline={cfg.baseline!r} is not among this report's variants: {', '.join(names)}")
    return names.index(cfg.baseline)


def served_figures(record: Record) -> dict[str, Any]:
    """A served load's capacity (with its interval), its memory, and accuracy and agreement with
    the synchronous answers at the capacity's rate and at the worst rate tried; nothing for a
    record measured in process only."""
    served = record.served
    if not served:
        return {}
    rates = served.rates
    at = next((r for r in rates if r.achieved_queries_per_s == served.capacity_queries_per_s), None)
    low, high = served.capacity_interval_queries_per_s
    return {
        "served_capacity_queries_per_s": served.capacity_queries_per_s,
        "served_capacity_low_queries_per_s": low,
        "served_capacity_high_queries_per_s": high,
        "capacity_fidelity": served.capacity_fidelity,
        "server_slots": served.slots,
        "server_peak_rss_mib": served.server_peak_rss_mib,
        "served_goodput_at_capacity": at.goodput if at else None,
        "served_accuracy_at_capacity": at.accuracy if at else None,
        "served_agreement_at_capacity": at.agreement if at else None,
        "served_accuracy_min": min(r.accuracy for r in rates if r.accuracy is not None),
        "served_agreement_min": min((r.agreement for r in rates if r.agreement is not None), default=None),
        "served_goodput_curve": goodput_curve(rates),
    }


def goodput_curve(rates: list[ServedRate]) -> str:
    """The goodput at each steady rate, by achieved rate, as one CSV cell: '2.10:1.00 3.40:0.97'
    (queries/s: share within the objective; a saturated rate marked '*')."""
    steady = sorted(
        (
            (r.achieved_queries_per_s, r)
            for r in rates
            if r.mode != "throughput" and r.achieved_queries_per_s is not None
        ),
        key=lambda pair: pair[0],
    )
    return " ".join(f"{rate:.2f}:{r.goodput:.2f}{'*' if r.saturated else ''}" for rate, r in steady)


def machine_price(record: Record) -> Optional[float]:
    """The configured machine's price an hour; none for a row its provider prices per query (a
    hosted model), which is not a machine rented by the hour."""
    if record.metrics.cost.cost_usd_per_query is not None:
        return None
    price: Optional[float] = record.config_value("hardware", "usd_per_hour")
    return price


def serving_figures(record: Record) -> dict[str, Any]:
    """Capacity under the record's latency objective (served, where a served load measured it;
    the in-process static-batch capacity beside it), its cost at the configured price, and its
    share of the measured memory bandwidth (None where an input is missing)."""
    m = record.metrics
    slo = record.config_value("measure", "slo_p95_ms")
    level = capacity_at(m.latency.load_curve, slo) if slo else None
    in_process = level.queries_per_s if level else None
    served = served_figures(record)
    capacity = record.served.capacity_queries_per_s if record.served else in_process
    price = machine_price(record)
    bandwidth = record.bandwidth.gb_per_s if record.bandwidth else None
    model_mib, decode = m.memory.model_mib, m.speed.decode_tokens_per_s
    share = bandwidth_share(model_mib, decode, bandwidth) if bandwidth and model_mib and decode else None
    return {
        "slo_p95_ms": slo,
        "capacity_queries_per_s": capacity,
        "capacity_source": "served" if served else "in_process",
        "in_process_capacity_queries_per_s": in_process,
        "capacity_concurrency": level.concurrency if level else None,
        **served,
        "usd_per_hour": price,
        "usd_per_million_queries": usd_per_million_queries(price, capacity) if capacity and price else None,
        "bandwidth_share": share,
    }


def gate_figures(c: Comparison) -> dict[str, Any]:
    """The gate's outcome, the languages shown worse and those it cannot decide, and the smallest
    margin the split resolves: in the language that resolves least (the gate needs every
    one), and in each."""
    margins = c.resolvable_margins or {"overall": c.overall.resolvable_margin}
    widest = max(margins, key=lambda lang: margins[lang])
    return {
        "gate": c.gate,
        "gate_worse_languages": " ".join(c.languages_with(FAIL)),
        "gate_inconclusive_languages": " ".join(c.languages_with(INCONCLUSIVE)),
        "resolvable_margin": margins[widest],
        "resolvable_margin_language": widest,
        "resolvable_margin_by_language": " ".join(f"{lang}={m:.3f}" for lang, m in margins.items()),
    }


# The verdict of a variant measured on another test split than the baseline's.
NOT_COMPARABLE = "not comparable (another test split)"
# Every variant's where none has an artifact size to be the least compressed (hosted models
# only) and report.baseline names none: nothing to pair with, the serving figures stand alone.
NO_BASELINE = "no baseline (report.baseline)"


def decisions(records: list[Record], compared: list[Point], cfg: ReportConfig) -> list[dict[str, Any]]:
    """One row per variant (the records and their `points`, in the same order): a row of the
    results CSV, which a page renders again (and an older CSV lacks the columns added since)."""
    base = baseline_of(compared, cfg)
    base_rows = read_predictions(records[base]) if base is not None else None
    hosted = [
        (p.variant, per_query) for r, p in zip(records, compared) if (per_query := r.metrics.cost.cost_usd_per_query)
    ]
    out = []
    for i, (record, p) in enumerate(zip(records, compared)):
        row: dict[str, Any] = {
            "variant": p.variant,
            "baseline": compared[base].variant if base is not None else "",
            "min_relative_accuracy": cfg.min_relative_accuracy,
            **serving_figures(record),
        }
        rows = read_predictions(record)
        if i == base:
            row["verdict"] = "baseline"
        elif base is None:
            row["verdict"] = NO_BASELINE
        elif rows is not None and base_rows is not None:
            try:
                c = compare(base_rows, rows, cfg.min_relative_accuracy)
            except ValueError:  # another test split: nothing to pair
                row["verdict"] = NOT_COMPARABLE
                out.append(row)
                continue
            o = c.overall
            row.update(
                {
                    "fixed": o.fixed,
                    "broken": o.broken,
                    "mcnemar_p": o.mcnemar_p,
                    "accuracy_difference": o.difference,
                    "accuracy_difference_ci95_low": o.difference_ci95[0],
                    "accuracy_difference_ci95_high": o.difference_ci95[1],
                    "verdict": o.verdict,
                    "relative_accuracy_ci95_low": o.relative_ci95[0],
                    "relative_accuracy_ci95_high": o.relative_ci95[1],
                    **gate_figures(c),
                    "hurt_most": c.hurt_most or "",
                }
            )
        price = row["usd_per_hour"]  # as serving_figures priced it
        for name, per_query in hosted:
            if price and name != p.variant:
                row[f"{BREAK_EVEN}{name}"] = break_even_queries_per_month(price, per_query)
        out.append(row)
    return out


# A row's monthly volume above which its machine costs less than a hosted row: this prefix,
# then the hosted row's name.
BREAK_EVEN = "break_even_per_month_vs_"


@dataclass
class Decision(Section):
    """A decision row as the tables read it, from a row built here or read back from a results
    CSV: a column the CSV was written without is `absent` (an older CSV), and the CSV's other
    columns (the figures, the provenance, each break-even against a hosted row) are `other`."""

    variant: str = ""
    baseline: str = ""
    min_relative_accuracy: Optional[float] = None
    slo_p95_ms: Optional[float] = None
    capacity_queries_per_s: Optional[float] = None
    capacity_source: Optional[str] = None  # a row of an older CSV has none: its capacity is in process
    in_process_capacity_queries_per_s: Optional[float] = None
    capacity_concurrency: Optional[int] = None
    served_capacity_queries_per_s: Optional[float] = None
    served_capacity_low_queries_per_s: Optional[float] = None
    served_capacity_high_queries_per_s: Optional[float] = None
    capacity_fidelity: Optional[float] = None
    served_goodput_at_capacity: Optional[float] = None
    served_accuracy_at_capacity: Optional[float] = None
    served_agreement_at_capacity: Optional[float] = None
    served_accuracy_min: Optional[float] = None
    served_agreement_min: Optional[float] = None
    server_peak_rss_mib: Optional[float] = None
    served_goodput_curve: Optional[str] = None
    usd_per_hour: Optional[float] = None
    usd_per_million_queries: Optional[float] = None
    bandwidth_share: Optional[float] = None
    fixed: Optional[int] = None
    broken: Optional[int] = None
    mcnemar_p: Optional[float] = None
    accuracy_difference: Optional[float] = None
    accuracy_difference_ci95_low: Optional[float] = None
    accuracy_difference_ci95_high: Optional[float] = None
    verdict: Optional[str] = None
    relative_accuracy_ci95_low: Optional[float] = None
    relative_accuracy_ci95_high: Optional[float] = None
    gate: Optional[str] = None
    gate_worse_languages: Optional[str] = None
    gate_inconclusive_languages: Optional[str] = None
    # what a row kept before the gate had three outcomes: the languages that did not pass
    gate_failing_languages: Optional[str] = None
    resolvable_margin: Optional[float] = None
    resolvable_margin_language: Optional[str] = None
    hurt_most: Optional[str] = None

    def break_even(self) -> dict[str, float]:
        """Each hosted row's name -> the monthly volume above which this row's machine costs less."""
        return {k[len(BREAK_EVEN) :]: v for k, v in self.other.items() if k.startswith(BREAK_EVEN) and v is not None}


def _read(rows: list[Row]) -> list[Decision]:
    return [Decision.from_json(r) for r in rows]


def _break_even(rows: list[Decision]) -> str:
    """'Break-even against gpt41: gguf_q4km above 365,000 queries a month, ...', or nothing."""
    pairs = [(hosted, r.variant, volume) for r in rows for hosted, volume in r.break_even().items()]
    if not pairs:
        return ""
    return (
        " Break-even, a month, with the machine paid around the clock: "
        + "; ".join(f"{variant} against {hosted} above {volume:,.0f} queries" for hosted, variant, volume in pairs)
        + "."
    )


def _fmt(value: Any, fmt: str, missing: str = "") -> str:
    return missing if value is None or value == "" else fmt.format(value)


def _all(fmt: str, *figures: Optional[float]) -> str:
    """Figures a row holds wherever its cell shows them: one missing is a broken row, never a blank."""
    held = [f for f in figures if f is not None]
    assert len(held) == len(figures), f"a row lacks one of the figures of a {fmt!r} cell"
    return fmt.format(*held)


HEADERS = [
    "variant",
    "fixed / broken",
    "McNemar p",
    "difference (95% CI)",
    "verdict",
    "gate",
    "relative (95% CI)",
    "languages not passing",
    "resolvable margin",
    "hurt most",
    "capacity q/s (at)",
    "USD / M queries",
    "bandwidth",
]
# What a row kept before the gate had three outcomes says: its 'fail' meant only "did not pass"
# (shown worse, or undecided), and what it was is not in the row.
NOT_PASSED = "not passed"


def _two_outcome(d: Decision) -> bool:
    return bool(d.gate) and "gate_worse_languages" in d.absent


def gate_cells(d: Decision) -> list[str]:
    """The gate, the relative interval, the languages not passing, the resolvable margin."""
    if _two_outcome(d):
        languages = _fmt(d.gate_failing_languages, NOT_PASSED + ": {}")
        gate = NOT_PASSED if d.gate == FAIL else d.gate or ""
        return [gate, _fmt(d.relative_accuracy_ci95_low, "from {:.3f}"), languages, ""]
    languages = "; ".join(
        f"{outcome}: {named}"
        for outcome, named in (("worse", d.gate_worse_languages), (INCONCLUSIVE, d.gate_inconclusive_languages))
        if named
    )
    relative = (
        _all("{:.3f} to {:.3f}", d.relative_accuracy_ci95_low, d.relative_accuracy_ci95_high)
        if d.relative_accuracy_ci95_high is not None
        else ""
    )
    margin = _fmt(d.resolvable_margin, "{:.3f}") + _fmt(d.resolvable_margin_language, " ({})")
    return [d.gate or "", relative, languages, margin]


def cells(row: Row) -> list[str]:
    """A decision row as table cells; the comparison cells of the baseline, of a variant not
    comparable with it, and of every variant where there is none, are empty."""
    d = Decision.from_json(row)
    compared = d.verdict not in (None, "baseline", NOT_COMPARABLE, NO_BASELINE)
    diff = (
        _all(
            "{:+.3f} ({:+.3f} to {:+.3f})",
            d.accuracy_difference,
            d.accuracy_difference_ci95_low,
            d.accuracy_difference_ci95_high,
        )
        if compared
        else ""
    )
    return [
        d.variant,
        f"{d.fixed} / {d.broken}" if compared else "",
        _fmt(d.mcnemar_p, "{:.3f}") if compared else "",
        diff,
        d.verdict or "unmeasured",
        *gate_cells(d),
        _fmt(d.hurt_most, "{}"),
        _capacity_cell(d),
        _fmt(d.usd_per_million_queries, "{:.2f}", "unmeasured"),
        _fmt(d.bandwidth_share, "{:.0%}", "unmeasured"),
    ]


def _capacity_cell(d: Decision) -> str:
    """'3.1 served (2.9-3.6), in-process 4.0 (16 at a time)', or the in-process figure alone."""
    served_row = d.capacity_source == "served"
    capacity = d.in_process_capacity_queries_per_s if served_row else d.capacity_queries_per_s
    in_process = "unmeasured" if capacity is None else f"{capacity:.1f} ({d.capacity_concurrency} at a time)"
    if not served_row:
        return in_process
    served = "none" if d.served_capacity_queries_per_s is None else f"{d.served_capacity_queries_per_s:.1f}"
    interval = _all("{:.1f}-{:.1f}", d.served_capacity_low_queries_per_s, d.served_capacity_high_queries_per_s)
    return f"{served} served ({interval}), in-process {in_process}"


def caption(rows: list[Row]) -> str:
    read = _read(rows)
    r = read[0]
    price = (
        f"${r.usd_per_hour:g} per machine-hour (hardware.usd_per_hour)"
        if r.usd_per_hour
        else "no machine price (set hardware.usd_per_hour)"
    )
    kept_before = (
        f" '{NOT_PASSED}': a row kept when the gate had two outcomes; its lower bound missed the margin, and "
        "whether it was shown worse or undecided was not kept."
        if any(_two_outcome(d) for d in read)
        else ""
    )
    against = (
        f"Against {r.baseline}, paired query by query."
        if r.baseline
        else "No baseline: no variant has an artifact size to be the least compressed one (a hosted model has "
        "none); name one with report.baseline=VARIANT to pair the others with it."
    )
    return (
        f"{against} Difference: the 95% interval from a bootstrap over "
        f"phrasing clusters; verdict from that interval. Gate, on the 95% interval of accuracy relative to the "
        f"baseline's, overall and in every language, at {r.min_relative_accuracy:g}: pass when its lower "
        "bound reaches that, fail when its upper bound is below it (shown worse), inconclusive when it "
        "straddles it." + kept_before + " Resolvable margin: the relative interval's half-width in the "
        "language that resolves least; a margin (1 - the gate's) narrower than that cannot pass even a variant "
        f"as accurate as the baseline. Capacity: the highest throughput whose p95 latency is at most "
        f"{_fmt(r.slo_p95_ms, '{:g}')} ms (measure.slo_p95_ms){_served_note(read)}. Cost at {price}. "
        "Bandwidth: weights read per second while decoding, as a share of the measured memory bandwidth."
        + _break_even(read)
    )


def _served_note(rows: list[Decision]) -> str:
    served = [d.variant for d in rows if d.capacity_source == "served"]
    if not served:
        return ""
    return (
        f"; for {', '.join(served)} served: the highest achieved rate of open-loop Poisson load on llama.cpp's "
        "server whose p95 met it, with the interval it lies in (measure.serve=server), the in-process "
        "static-batch capacity beside it"
        + ("; for the others, static batches in process" if len(served) < len(rows) else "")
    )


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


SERVED_HEADERS = [
    "variant",
    "served capacity q/s (interval)",
    "in-process q/s",
    "served / in-process",
    "goodput at capacity",
    "accuracy at capacity (lowest)",
    "agreement at capacity (lowest)",
    "server peak RSS MiB",
    "goodput by rate (q/s:share)",
]


def served_markdown(rows: list[Row]) -> str:
    """The served rows' table in Markdown (nothing where no row was served)."""
    table = served_cells(rows)
    if not table:
        return ""
    lines = ["| " + " | ".join(SERVED_HEADERS) + " |", "|" + "---|" * len(SERVED_HEADERS)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in table]) + "\n"


def served_cells(rows: list[Row]) -> list[list[str]]:
    """The served rows' load figures as table cells: capacity with its interval, the fidelity
    ratio, goodput, accuracy and agreement with the synchronous answers under load, and the
    goodput curve."""
    out = []
    for d in (d for d in _read(rows) if d.capacity_source == "served"):
        capacity = _fmt(d.served_capacity_queries_per_s, "{:.2f}", "none") + _all(
            " ({:.2f}-{:.2f})", d.served_capacity_low_queries_per_s, d.served_capacity_high_queries_per_s
        )
        out.append(
            [
                d.variant,
                capacity,
                _fmt(d.in_process_capacity_queries_per_s, "{:.2f}", "none"),
                _fmt(d.capacity_fidelity, "{:.2f}"),
                _fmt(d.served_goodput_at_capacity, "{:.2f}"),
                _fmt(d.served_accuracy_at_capacity, "{:.3f}") + _fmt(d.served_accuracy_min, " ({:.3f})"),
                _fmt(d.served_agreement_at_capacity, "{:.3f}") + _fmt(d.served_agreement_min, " ({:.3f})"),
                _fmt(d.server_peak_rss_mib, "{:.0f}"),
                _fmt(d.served_goodput_curve, "{}"),
            ]
        )
    return out
