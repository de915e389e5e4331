"""Results pages: a sweep's records kept as a small CSV, and a Markdown page rendered from that
CSV alone. The page, and the README's copy of its table, are generated, never typed: any of
them can be rendered again from the committed CSV and must come out identical. The page
states the SHA-256 of the CSV as it was written from the records, and rendering again keeps
that, so a CSV edited by hand no longer matches its page.

Each CSV row is one measured variant: its figures, its accuracy per language, and what the
figures belong to (model, fine-tuning, machine, test split, measurement version, date,
commit, and the command that produced them).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from harness.record import OK, Record, Section
from harness.report import decision
from harness.report.config import ReportConfig
from harness.report.records import Point, by_hardware, cell, points

# The figures a row keeps, as a `records.Point` names them (`Point.flat`).
FIGURES = (
    "size_mib",
    "accuracy",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
    "invalid_rate",
    "decode_tokens_per_s",
    "decode_tokens_per_s_ci95_low",
    "decode_tokens_per_s_ci95_high",
    "prefill_tokens_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "peak_memory_mib",
    "memory_kind",
    "batch_agreement",
    "energy_j_per_query",
    "energy_method",
    "train_wall_s",
    "quantize_wall_s",
)
LANGUAGE_PREFIX = "accuracy_"


def rows_from_records(records: list[Record], command: str, cfg: ReportConfig) -> list[dict[str, Any]]:
    """One row per successful record, in the records' order, with its comparison against its
    hardware group's baseline and its serving cost (harness.report.decision)."""
    ok = [r for r in records if r.status == OK]
    judged: dict[int, dict[str, Any]] = {}  # by id(): a record older than its key has none
    for group in by_hardware(ok).values():
        for record, row in zip(group, decision.decisions(group, points(group), cfg)):
            judged[id(record)] = {k: v for k, v in row.items() if k != "variant"}
    return [_row(record, p, command, judged[id(record)]) for record, p in zip(ok, points(ok))]


def _row(record: Record, p: Point, command: str, judged: dict[str, Any]) -> dict[str, Any]:
    """A successful record's CSV row: its point's figures, then what they belong to."""
    env, bandwidth, figures = record.environment, record.bandwidth, p.flat()
    by_language = record.metrics.accuracy.accuracy_by_language or {}
    # a record older than its runtime's name says so, rather than nothing
    runtime = "not kept" if "name" in record.runtime.absent else record.runtime.name
    return {
        "variant": p.variant,
        "runtime": runtime,
        **{k: figures[k] for k in FIGURES},
        **{f"{LANGUAGE_PREFIX}{lang}": value for lang, value in by_language.items()},
        "model": p.model,
        "train": p.train,
        "hardware": p.hardware,
        "machine": p.machine,
        "cpu_flags": " ".join((record.machine.cpu.flags if record.machine else None) or []) or None,
        "train_precision": (record.train.precision or None) if record.train is not None else "none",
        "test_queries": record.metrics.accuracy.n_samples,
        "dataset": record.keys.dataset,
        "measure_version": record.measure_version,
        "bandwidth_gb_per_s": bandwidth.gb_per_s if bandwidth else None,
        "bandwidth_method": bandwidth.method if bandwidth else None,
        "measured_on": (env.measured_at or "")[:10],
        "commit": (env.git_commit or "")[:12],
        "command": command,
        **judged,
    }


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _parse(value: str) -> Any:
    """A CSV cell as the figure it was: empty is unmeasured (None), numbers are numbers."""
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def languages(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(
        {
            k[len(LANGUAGE_PREFIX) :]
            for row in rows
            for k in row
            if k.startswith(LANGUAGE_PREFIX) and len(k) == len(LANGUAGE_PREFIX) + 2
        }
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown: one row per variant, accuracy per language beside it."""
    langs = languages(rows)
    headers = [
        "variant",
        "runtime",
        "size MiB",
        "accuracy (95% CI)",
        *langs,
        "decode tok/s (95% CI)",
        "p50 ms",
        "peak MiB",
        "batch agreement",
        "J/query",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        named = Named.from_json(r)
        cells = [
            named.variant,
            str(named.runtime),
            cell(r, "size_mib", "{:.0f}"),
            cell(r, ("accuracy", "accuracy_ci95_low", "accuracy_ci95_high"), "{:.3f} ({:.3f}-{:.3f})"),
            *(cell(r, f"{LANGUAGE_PREFIX}{lang}", "{:.2f}") for lang in langs),
            cell(
                r,
                ("decode_tokens_per_s", "decode_tokens_per_s_ci95_low", "decode_tokens_per_s_ci95_high"),
                "{:.1f} ({:.1f}-{:.1f})",
            ),
            cell(r, "latency_p50_ms", "{:.0f}"),
            cell(r, "peak_memory_mib", "{:.0f}") + f" {named.memory_kind}",
            cell(r, "batch_agreement", "{:.2f}"),
            cell(r, "energy_j_per_query", "{:.3f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Provenance:
    """What a page's rows say of where their figures come from, stated once above its table:
    each field's value, or values where the rows differ."""

    command: str
    measured_on: str
    measure_version: str
    commit: str
    machine: str
    hardware: str
    bandwidth_method: str
    cpu_flags: str
    model: str
    train: str
    train_precision: str
    test_queries: str
    dataset: str


def provenance(rows: list[dict[str, Any]]) -> Provenance:
    values = {f.name: ", ".join(dict.fromkeys(str(r.get(f.name)) for r in rows)) for f in fields(Provenance)}
    return Provenance(**values)


@dataclass
class Named(Section):
    """A row as the page names it; its figures (the section's `other`) are read by column (`cell`)."""

    variant: str = ""
    runtime: Optional[str] = None
    memory_kind: Optional[str] = None
    slo_p95_ms: Optional[float] = None


def _kept(value: str) -> str:
    """A provenance value, or what a CSV written before it was kept says instead."""
    return "not kept in this CSV" if value == "None" else value


def _precision(value: str) -> str:
    """How the fine-tune computed, as `train.precision` resolved on the machine that trained
    (auto: bf16 where the CPU has AVX512-BF16 or AMX, else fp32)."""
    return "" if value == "none" else f", training precision {_kept(value)}"


def checksum(csv_path: Path) -> str:
    """The CSV's SHA-256, as its page states it."""
    return hashlib.sha256(csv_path.read_bytes()).hexdigest()


# How a page states its CSV's checksum, and what finds it there.
_CHECKSUM = "as written from its records, SHA-256 `{}`"
_STATED_CHECKSUM = re.compile("as written from its records, SHA-256 `([0-9a-f]{64})`")


def stated_checksum(md: str) -> Optional[str]:
    """The checksum a page states of its CSV; None where it states none."""
    found = _STATED_CHECKSUM.search(md)
    return found.group(1) if found else None


def page(title: str, rows: list[dict[str, Any]], csv_name: str, csv_sha256: Optional[str]) -> str:
    """The whole results page: what was measured, where, when and how, then the table.
    `csv_sha256`: the CSV's checksum as the records wrote it (None: not known, none stated)."""
    p = provenance(rows)
    written = f" ({_CHECKSUM.format(csv_sha256)})" if csv_sha256 else ""
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Generated from `{csv_name}`{written} by `python -m harness.report --render` (do not edit by hand).",
            "",
            f"- command: `{p.command}`",
            f"- measured on: {p.measured_on}, measurement version {p.measure_version}, commit {p.commit}",
            f"- machine: {p.machine} (hardware={p.hardware}); memory bandwidth "
            f"{cell(rows[0], 'bandwidth_gb_per_s', '{:.1f}')} GB/s ({p.bandwidth_method})",
            f"- CPU flags: {_kept(p.cpu_flags)}",
            f"- model: {p.model}, fine-tuning: {p.train}" + _precision(p.train_precision),
            f"- test split: {p.test_queries} queries (dataset {p.dataset})",
            "",
            table(rows),
            "Accuracy is exact match of the intent over the test split, with its 95% Wilson interval; per "
            "language, each column's share. Decode tok/s is the median of repeated fixed-shape runs with the "
            "95% interval of that median. p50 is the per-query latency at batch 1. Peak MiB is the measuring "
            "process's peak (RSS on a CPU, VRAM on a GPU). Batch agreement is the share of batch-1 answers the "
            "batched accuracy pass reproduced. J/query is 'unmeasured' where no energy counter could be read.",
            "",
            "## Against the baseline, and serving cost",
            "",
            decision.caption(rows),
            "",
            decision.markdown(rows),
            *_served(rows),
        ]
    )


def _served(rows: list[dict[str, Any]]) -> list[str]:
    """The served load's section of a page, where a row was served."""
    table_ = decision.served_markdown(rows)
    if not table_:
        return []
    slo = Named.from_json(rows[0]).slo_p95_ms
    return [
        "## As served (llama.cpp's server, open-loop load)",
        "",
        f"Capacity: the highest achieved Poisson rate whose p95 latency is at most "
        f"{slo:g} ms, in the interval it lies in (from the lowest rate that failed below it, if one "
        "did; up to the lowest rate above it that failed, or the highest rate reached). Goodput: the share of "
        "requests answered within that objective. Accuracy and agreement (with the server's own answers one "
        "request at a time) at the capacity's rate, the lowest over every rate in brackets. The goodput curve "
        "marks a saturated rate with '*'.",
        "",
        table_,
    ]


def write_page(csv_path: Path, title: Optional[str] = None, csv_sha256: Optional[str] = None) -> Path:
    """Render `<name>.md` beside `<name>.csv`; its title and the CSV's checksum are an existing
    page's, kept, unless given (only the CSV's writer knows the checksum: a page rendered again
    from a CSV edited since states the checksum of the CSV before)."""
    md = csv_path.with_suffix(".md")
    before = md.read_text(encoding="utf-8") if md.exists() else None
    if title is None:
        title = before.splitlines()[0].removeprefix("# ") if before else csv_path.stem
    if csv_sha256 is None and before:
        csv_sha256 = stated_checksum(before)
    md.write_text(page(title, read_csv(csv_path), csv_path.name, csv_sha256), encoding="utf-8")
    return md


README_BLOCK = (
    "<!-- results table: {name} (generated: python -m harness.report --render docs/results/{name}.csv "
    "--readme README.md) -->"
)
README_END = "<!-- end of results table -->"


def readme_tables(rows: list[dict[str, Any]]) -> str:
    """What the README shows of a page: its results table, then each variant against the baseline."""
    return f"{table(rows)}\n{decision.markdown(rows)}"


def readme_with_table(readme: str, name: str, rows: list[dict[str, Any]]) -> str:
    """The README with the tables between its markers for `name` replaced by the generated ones."""
    start = README_BLOCK.format(name=name)
    if start not in readme:
        raise ValueError(f"README has no marker for the {name} table: {start}")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{start}\n{readme_tables(rows)}{README_END}{tail}"
