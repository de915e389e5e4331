"""The results table printed at the end of a run or a sweep, and the Hydra callback that
prints it (and fails the process) when a multirun ends."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness.store import read_json

log = logging.getLogger(__name__)

# (header, metric key, format) for the terminal table.
COLUMNS = (
    ("acc", "accuracy", "{:.3f}"),
    ("95% CI", "accuracy_ci95", "{0[0]:.2f}-{0[1]:.2f}"),
    ("invalid", "invalid_rate", "{:.3f}"),
    ("tg tok/s", "decode_tokens_per_s", "{:.1f}"),
    ("pp tok/s", "prefill_tokens_per_s", "{:.0f}"),
    ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("J/query", "energy_j_per_query", "{:.3f}"),
)
_JOB_KEYS = ("model", "quant", "train", "hardware")


def _cell(value: Any, fmt: str) -> str:
    return "unmeasured" if value is None else fmt.format(value)


def _varying(records: list[dict]) -> list[str]:
    """The job keys that differ between records (always the quant)."""
    return [k for k in _JOB_KEYS if k == "quant" or len({r.get("job", {}).get(k) for r in records}) > 1]


def rows(records: list[dict]) -> list[list[str]]:
    """One table row per successful record: variant, size, then COLUMNS."""
    keys = _varying(records)
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        m = r["metrics"]
        variant = " ".join(str(r["job"][k]) for k in keys)
        out.append([variant, f"{r['artifact']['size_mib']:.0f}"] + [_cell(m.get(key), fmt) for _, key, fmt in COLUMNS])
    return out


def failures(records: Iterable[dict]) -> list[str]:
    """'quant: reason' for each failed record, the reason's first line."""
    return [
        f"{r.get('job', {}).get('quant')}: {r.get('error_type')}: {(r.get('error') or '').splitlines()[0]}"
        for r in records
        if r.get("status") != "ok"
    ]


def print_table(records: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # logs and CI: do not squeeze figures into 80 columns
    shared = [k for k in _JOB_KEYS if k not in _varying(records)]
    first = records[0].get("job", {}) if records else {}
    caption = ", ".join(f"{k}={first.get(k)}" for k in shared)
    table = Table(title=title, caption=caption or None)
    for header in ("variant", "MiB") + tuple(c[0] for c in COLUMNS):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows(records):
        table.add_row(*row)
    if table.row_count:
        console.print(table)
    for line in failures(records):
        console.print(f"[bold red]FAILED[/] {line}", highlight=False)


def read_sweep_records(sweep_dir: Path) -> list[dict]:
    return [read_json(p) for p in sorted(sweep_dir.glob("*/record.json"), key=lambda p: int(p.parent.name.split("_")[0]))]


class SweepSummary(Callback):
    """Prints the sweep's table when a multirun ends, and exits non-zero if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = read_sweep_records(sweep_dir)
        print_table(records, f"sweep {sweep_dir}")
        failed = [r for r in records if r.get("status") != "ok"]
        if failed:
            log.error("%d of %d jobs failed; their records (with reasons) are under %s", len(failed), len(records), sweep_dir)
            sys.exit(1)


