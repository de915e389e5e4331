"""The results table printed at the end of a run or a sweep, and the Hydra callback that, when
a multirun ends, prints it, writes the sweep's report, logs the sweep to W&B, and fails the
process if a job failed."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.report.pareto import frontier_memberships
from harness.report.records import cell, failures, point, read_sweep_records, shared_caption, varying_keys

log = logging.getLogger(__name__)

# (header, point key, format) for the terminal table.
COLUMNS = (
    ("MiB", "size_mib", "{:.0f}"),
    ("acc", "accuracy", "{:.3f}"),
    ("95% CI", ("accuracy_ci95_low", "accuracy_ci95_high"), "{:.2f}-{:.2f}"),
    ("invalid", "invalid_rate", "{:.3f}"),
    ("tg tok/s", "decode_tokens_per_s", "{:.1f}"),
    ("pp tok/s", "prefill_tokens_per_s", "{:.0f}"),
    ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("peak MiB", "peak_memory_mib", "{:.0f}"),
    ("J/query", "energy_j_per_query", "{:.3f}"),
)


def rows(records: list[dict]) -> list[list[str]]:
    """One row per successful record: variant, COLUMNS, the Pareto frontiers it is on."""
    ok = [r for r in records if r.get("status") == "ok"]
    keys = varying_keys(ok)
    points = [point(r, keys) for r in ok]
    return [
        [p["variant"], *(cell(p, key, fmt) for _, key, fmt in COLUMNS), " ".join(on)]
        for p, on in zip(points, frontier_memberships(points))
    ]


def print_table(records: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and CI: do not squeeze figures into 80 columns
    ok = [r for r in records if r.get("status") == "ok"]
    table = Table(title=title, caption=(shared_caption(ok) + "; Pareto: frontiers of accuracy vs each cost") if ok else None)
    for header in ("variant",) + tuple(c[0] for c in COLUMNS) + ("Pareto",):
        table.add_column(header, justify="left" if header in ("variant", "Pareto") else "right")
    for row in rows(records):
        table.add_row(*row)
    if table.row_count:
        console.print(table)
    for line in failures(records):
        console.print(f"[bold red]FAILED[/] {line}", highlight=False)


class SweepSummary(Callback):
    """Before a multirun: the checks that concern every job. At its end: the table, the report under <sweep>/report, the W&B summary
    run, and a non-zero exit if any job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep pinned to a GPU stops before its first job on a machine without one."""
        from harness.config import ConfigError
        from harness.pipeline import check_device

        # sweepers that persist (Optuna's SQLite study) write there before any job runs
        Path(config.paths.output_dir).mkdir(parents=True, exist_ok=True)
        try:
            check_device(config.hardware.device)
        except ConfigError as exc:
            log.error("%s (the whole sweep needs it, so no job was started)", exc)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.config import LoggerConfig
        from harness.report.wandb_log import log_sweep
        from harness.report.write import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        records = read_sweep_records(sweep_dir)
        print_table(records, f"sweep {sweep_dir}")
        report_dir = write_report(records, sweep_dir / "report", title=f"sweep {sweep_group(sweep_dir)}")
        log.info("report: %s", report_dir / "report.html")
        logger = LoggerConfig(**OmegaConf.to_container(config.logger, resolve=True))
        log_sweep(records, report_dir, logger, group=sweep_group(sweep_dir))
        failed = [r for r in records if r.get("status") != "ok"]
        if failed:
            log.error("%d of %d jobs failed; their records (with reasons) are under %s", len(failed), len(records), sweep_dir)
            sys.exit(1)


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a multirun: its date and time directories, as Hydra names them."""
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"
