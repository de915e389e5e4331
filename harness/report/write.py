"""The Pareto report of a set of records: a Markdown table, a CSV, PNG scatter plots with the
frontier, and one self-contained HTML page (plots inlined) that opens offline."""

from __future__ import annotations

import base64
import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from harness.record import SKIPPED, Record
from harness.report import decision
from harness.report.columns import REPORT, Column, shown_in
from harness.report.config import ReportConfig
from harness.report.pareto import ACCURACY, COSTS, ENERGY, figure, frontier, frontier_memberships, interval, versus
from harness.report.records import Point, by_hardware, failures, points, shared_caption

# The energy figure an estimate stands in for where none was measured, apart (never a measurement).
ENERGY_ESTIMATE = "energy_estimate_j_per_query"
NOISE_NOTE = (
    "Accuracy carries its 95% Wilson interval and decode/prefill tok/s the 95% interval of their median over "
    "the repetitions; '~' marks a ratio or difference inside those intervals (indistinguishable here), and a "
    "variant leaves a Pareto frontier only when another beats it beyond the noise on some axis."
)
MEMORY_NOTE = (
    "Peak MiB is the serving footprint: the peak resident memory (VRAM on a GPU) of the process that "
    "measured the variant, while it loaded the artifact, answered one query at a time and ran the speed "
    "test. That process holds the runtime and its libraries (the record's runtime.process_held) and nothing "
    "else of the harness, as a server of the artifact would; RSS over baseline is that peak less the "
    "process's RSS just before the model loaded."
)
# The Markdown and HTML tables: the variant, then the columns the column spec shows in reports.
TABLE = shown_in(REPORT)


@dataclass
class Section:
    """One hardware's variants, compared only with each other."""

    hardware: str
    caption: str
    points: list[Point]
    on_frontier: list[list[str]]
    baseline: int | None
    plots: list[Path]
    # each variant against the baseline, and what serving it costs (harness.report.decision)
    decisions: list[dict[str, Any]]


def _table_rows(section: Section) -> list[list[str]]:
    base = section.points[section.baseline] if section.baseline is not None else None
    out = []
    for i, (p, on) in enumerate(zip(section.points, section.on_frontier)):
        ratio = "baseline" if i == section.baseline else (versus(p, base) if base else "")
        out.append([p.variant, *(p.cell(c) for c in TABLE), ", ".join(on) or "-", ratio])
    return out


def _headers() -> list[str]:
    return ["variant", *(c.header for c in TABLE), "Pareto frontiers", "vs baseline"]


def plot_tradeoff(compared: list[Point], cost: Column, title: str, path: Path) -> Path | None:
    """Accuracy against one cost, every variant labelled, the frontier drawn as a step line.
    None when no variant measured this cost (energy on most VMs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [i for i, p in enumerate(compared) if p.value(cost.name) is not None and p.value(ACCURACY.name) is not None]
    if not shown:
        return None
    best = set(frontier(compared, [ACCURACY, cost]))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for i in shown:
        p = compared[i]
        on = i in best
        x, y = figure(p, cost), figure(p, ACCURACY)
        (x_low, x_high), (y_low, y_high) = interval(p, cost), interval(p, ACCURACY)
        ax.errorbar(
            x,
            y,
            xerr=[[x - x_low], [x_high - x]],
            yerr=[[y - y_low], [y_high - y]],
            fmt="none",
            ecolor="0.6",
            elinewidth=0.8,
            capsize=2,
            zorder=2,
        )
        ax.scatter(
            x,
            y,
            s=70 if on else 40,
            color="tab:red" if on else "tab:blue",
            zorder=3,
            edgecolor="black",
            linewidth=0.5,
        )
        ax.annotate(p.variant, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    front = sorted((figure(compared[i], cost), figure(compared[i], ACCURACY)) for i in best)
    if len(front) > 1:
        ax.step(
            [x for x, _ in front],
            [y for _, y in front],
            where="post" if cost.maximize else "pre",
            color="tab:red",
            linewidth=1.2,
            alpha=0.7,
            label="Pareto frontier",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(cost.label + (" (higher is better)" if cost.maximize else " (lower is better)"))
    ax.set_ylabel("accuracy (test split)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _served_curve(record: Record) -> list[tuple[float, float]]:
    """(p95 ms, achieved queries/s) of a served load's steady rates (not the all-at-once burst),
    by rate; saturated ones included (they are where the curve bends)."""
    from harness.measure.load import THROUGHPUT

    rates = record.served.rates if record.served else []
    steady = [(r.latency_p95_ms, r.achieved_queries_per_s) for r in rates if r.mode != THROUGHPUT]
    return sorted(((p95, rate) for p95, rate in steady if p95 is not None and rate is not None), key=lambda p: p[1])


def _or_nan(value: Optional[float]) -> float:
    """A figure as matplotlib plots an unmeasured one: a gap in the line."""
    return math.nan if value is None else value


def plot_load(group: list[Record], compared: list[Point], path: Path) -> Path | None:
    """Throughput against p95 latency at each concurrency level, one line per variant, and where
    a variant was served, its served curve (open-loop rates on llama.cpp's server) dashed in the
    same colour; the latency objective drawn. None when no record has a load curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(p.variant, r.metrics.latency.load_curve or [], _served_curve(r)) for r, p in zip(group, compared)]
    if not any(curve or served for _, curve, served in curves):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for name, curve, served in curves:
        color = None
        if served:
            (line,) = ax.plot(*zip(*served), marker="s", linestyle="--", label=f"{name} served")
            color = line.get_color()
        if curve:
            ax.plot(
                [_or_nan(c.latency_p95_ms) for c in curve],
                [_or_nan(c.queries_per_s) for c in curve],
                marker="o",
                color=color,
                label=f"{name} in process" if served else name,
            )
            for c in curve:
                ax.annotate(
                    str(c.concurrency),
                    (c.latency_p95_ms, c.queries_per_s),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
    slo = group[0].config_value("measure", "slo_p95_ms")
    if slo:
        ax.axvline(slo, color="tab:red", linestyle="--", linewidth=1, label=f"p95 objective {slo:g} ms")
    ax.set_xlabel("p95 latency (ms); in process each point a concurrency level, served a Poisson rate")
    ax.set_ylabel("queries/s")
    ax.set_title("capacity under load", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def sections(records: list[Record], out_dir: Path, cfg: ReportConfig) -> list[Section]:
    out = []
    for hardware, group in sorted(by_hardware(records).items()):
        compared = points(group)
        plots = [
            plot_tradeoff(
                compared,
                cost,
                f"{hardware}: accuracy vs {cost.label}",
                out_dir / f"{hardware}_accuracy_vs_{cost.key}.png",
            )
            for cost in COSTS
        ] + [plot_load(group, compared, out_dir / f"{hardware}_load.png")]
        out.append(
            Section(
                hardware,
                shared_caption(group),
                compared,
                frontier_memberships(compared),
                decision.baseline_of(compared, cfg),
                [p for p in plots if p],
                decision.decisions(group, compared, cfg),
            )
        )
    return out


def _energy_note(points: list[Point]) -> str:
    if any(p.value(ENERGY.name) is not None for p in points):
        return ""
    reasons = sorted({p.energy_unmeasured_reason for p in points if p.energy_unmeasured_reason})
    estimates = [(p, j) for p in points if (j := p.value(ENERGY_ESTIMATE)) is not None]
    note = "Energy was not measured on this hardware" + (f" ({'; '.join(reasons)})" if reasons else "") + "."
    if estimates:
        note += (
            f" Estimates, not measurements ({estimates[0][0].energy_estimate_method}): "
            + ", ".join(f"{p.variant} {j:.3f} J/query" for p, j in estimates)
            + "."
        )
    return note


def memory_kinds(s: Section) -> str:
    """What a section's peak-memory column holds ('VRAM', 'RSS', ...), each kind its rows hold."""
    return " or ".join(dict.fromkeys(p.memory_kind for p in s.points))


def markdown(title: str, secs: list[Section], failed: list[str], skipped: list[str]) -> str:
    lines = [f"# {title}", ""]
    for s in secs:
        lines += [
            f"## {s.hardware}",
            "",
            f"{s.caption}; peak memory is {memory_kinds(s)}."
            + (f" Baseline: {s.points[s.baseline].variant}." if s.baseline is not None else ""),
            "",
        ]
        lines.append("| " + " | ".join(_headers()) + " |")
        lines.append("|" + "---|" * len(_headers()))
        lines += ["| " + " | ".join(r) + " |" for r in _table_rows(s)]
        lines += ["", MEMORY_NOTE, "", NOISE_NOTE]
        lines += [
            "",
            "### Against the baseline, and serving cost",
            "",
            decision.caption(s.decisions),
            "",
            decision.markdown(s.decisions).rstrip("\n"),
        ]
        served = decision.served_markdown(s.decisions)
        lines += ["", "### As served (llama.cpp's server, open-loop load)", "", served.rstrip("\n")] if served else []
        note = _energy_note(s.points)
        lines += ["", note] if note else []
        lines += [""] + [f"![{p.stem}]({p.name})" for p in s.plots] + [""]
    if failed:
        lines += ["## Failed jobs", ""] + [f"- {f}" for f in failed] + [""]
    if skipped:
        lines += ["## Skipped cells (they do not exist)", ""] + [f"- {f}" for f in skipped] + [""]
    return "\n".join(lines)


def write_csv(secs: list[Section], path: Path) -> None:
    fields = ["hardware", *secs[0].points[0].flat(), "pareto_frontiers", "is_baseline"] if secs else ["hardware"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for s in secs:
            for i, (p, on) in enumerate(zip(s.points, s.on_frontier)):
                writer.writerow(
                    {
                        "hardware": s.hardware,
                        **p.flat(),
                        "pareto_frontiers": " ".join(on),
                        "is_baseline": i == s.baseline,
                    }
                )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
tr.frontier td:first-child{font-weight:bold}.plots img{max-width:48%;margin:4px}.note{color:#555}"""


def _served_html(decisions: list[dict[str, Any]]) -> str:
    """The served load's table, where a row was served."""
    e, rows = html.escape, decision.served_cells(decisions)
    if not rows:
        return ""
    head = "".join(f"<th>{e(h)}</th>" for h in decision.SERVED_HEADERS)
    cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h3>As served (llama.cpp's server, open-loop load)</h3><table><tr>{head}</tr>{cells}</table>"


def html_page(title: str, secs: list[Section], failed: list[str], skipped: list[str]) -> str:
    e = html.escape
    body = [
        f"<h1>{e(title)}</h1>",
        "<p class=note>Bold variants are on at least one Pareto frontier "
        "(no other variant is both at least as accurate and cheaper on that cost).</p>",
    ]
    for s in secs:
        body.append(f"<h2>{e(s.hardware)}</h2><p>{e(s.caption)}; peak memory is {e(memory_kinds(s))}.</p>")
        body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in _headers()) + "</tr>")
        for row, on in zip(_table_rows(s), s.on_frontier):
            body.append(
                f"<tr class={'frontier' if on else 'dominated'}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
            )
        body.append("</table>")
        body.append(f"<p class=note>{e(MEMORY_NOTE)}</p><p class=note>{e(NOISE_NOTE)}</p>")
        body.append(
            f"<h3>Against the baseline, and serving cost</h3><p class=note>{e(decision.caption(s.decisions))}</p>"
        )
        body.append(
            "<table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in decision.HEADERS)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in decision.cells(d)) + "</tr>" for d in s.decisions)
            + "</table>"
        )
        body.append(_served_html(s.decisions))
        note = _energy_note(s.points)
        if note:
            body.append(f"<p class=note>{e(note)}</p>")
        body.append(
            "<div class=plots>"
            + "".join(
                f"<img alt='{e(p.stem)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                for p in s.plots
            )
            + "</div>"
        )
    if failed:
        body.append("<h2>Failed jobs</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in failed) + "</ul>")
    if skipped:
        body.append(
            "<h2>Skipped cells (they do not exist)</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in skipped) + "</ul>"
        )
    head = f"<meta charset=utf-8><title>{e(title)}</title><style>{_CSS}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"


def write_report(records: list[Record], out_dir: Path, title: str, cfg: ReportConfig | None = None) -> Path:
    """Write report.md, report.csv, the plots and report.html into out_dir; return out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    secs = sections(records, out_dir, cfg or ReportConfig())
    failed, skipped = failures(records), failures(records, SKIPPED)
    (out_dir / "report.md").write_text(markdown(title, secs, failed, skipped), encoding="utf-8")
    write_csv(secs, out_dir / "report.csv")
    (out_dir / "report.html").write_text(html_page(title, secs, failed, skipped), encoding="utf-8")
    return out_dir
