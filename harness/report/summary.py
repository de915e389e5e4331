"""The results table printed at the end of a run or a sweep, and the Hydra callback that, when
a multirun ends, prints it, writes the sweep's report, logs the sweep to W&B, and fails the
process if a job failed."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.record import OK, SKIPPED, Record
from harness.report import decision
from harness.report.columns import TERMINAL, shown_in
from harness.report.config import ReportConfig
from harness.report.pareto import frontier_memberships
from harness.report.records import by_hardware, failures, points, read_sweep_records, shared_caption

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

COLUMNS = shown_in(TERMINAL)


def rows(records: list[Record]) -> list[list[str]]:
    """One row per successful record: variant, COLUMNS, the Pareto frontiers it is on."""
    ok = [r for r in records if r.status == OK]
    compared = points(ok)
    return [
        [p.variant, *(p.cell(c) for c in COLUMNS), " ".join(on)]
        for p, on in zip(compared, frontier_memberships(compared))
    ]


def results_table(records: list[Record], title: str) -> Table:
    """Every successful record's COLUMNS and the Pareto frontiers it is on."""
    from rich.table import Table

    ok = [r for r in records if r.status == OK]
    table = Table(
        title=title, caption=(shared_caption(ok) + "; Pareto: frontiers of accuracy vs each cost") if ok else None
    )
    for header in ("variant",) + tuple(c.header for c in COLUMNS) + ("Pareto",):
        table.add_column(header, justify="left" if header in ("variant", "Pareto") else "right")
    for row in rows(records):
        table.add_row(*row)
    return table


def against_baseline_tables(records: list[Record], cfg: ReportConfig) -> Iterator[Table]:
    """For each hardware group of two or more records, each variant against its baseline."""
    from rich.table import Table

    for hardware, group in sorted(by_hardware(records).items()):
        if len(group) < 2:
            continue
        judged = decision.decisions(group, points(group), cfg)
        against = Table(title=f"{hardware}: against the baseline, and serving cost", caption=decision.caption(judged))
        for header in decision.HEADERS:
            against.add_column(header, justify="left" if header in ("variant", "verdict", "gate") else "right")
        for row in judged:
            against.add_row(*decision.cells(row))
        yield against


def print_table(records: list[Record], title: str, cfg: ReportConfig | None = None) -> None:
    """The results table, then for each hardware group each variant against its baseline."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and CI: do not squeeze figures into 80 columns
    table = results_table(records, title)
    if table.row_count:
        console.print(table)
    for against in against_baseline_tables(records, cfg or ReportConfig()):
        console.print(against)
    for line in failures(records, SKIPPED):
        console.print(f"[yellow]SKIPPED[/] {line}", highlight=False)
    for line in failures(records):
        console.print(f"[bold red]FAILED[/] {line}", highlight=False)


class SweepSummary(Callback):
    """At a multirun's end: the table, the report under <sweep>/report, the W&B summary run, and
    the exit code: 1 if a job failed, 0 when every job that exists ran (cells skipped for not
    existing are listed, not failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.report.config import LoggerConfig
        from harness.report.wandb_log import log_sweep
        from harness.report.write import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        records = read_sweep_records(sweep_dir)
        cfg = ReportConfig(**_plain(config.report))
        print_table(records, f"sweep {sweep_dir}", cfg)
        report_dir = write_report(records, sweep_dir / "report", title=f"sweep {sweep_group(sweep_dir)}", cfg=cfg)
        log.info("report: %s", report_dir / "report.html")
        logger = LoggerConfig(**_plain(config.logger))
        log_sweep(records, report_dir, logger, group=sweep_group(sweep_dir))
        skipped = [r for r in records if r.status == SKIPPED]
        if skipped:
            log.warning("%d of %d cells do not exist and were skipped (see SKIPPED above)", len(skipped), len(records))
        failed = [r for r in records if r.status not in (OK, SKIPPED)]
        if failed:
            log.error(
                "%d of %d jobs failed; their records (with reasons) are under %s", len(failed), len(records), sweep_dir
            )
            sys.exit(1)


def _plain(section: DictConfig) -> dict[str, Any]:
    """A config section as plain values, resolved."""
    plain = OmegaConf.to_container(section, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a multirun: its date and time directories, as Hydra names them."""
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"
