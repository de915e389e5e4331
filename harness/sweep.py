"""Hydra callbacks around a sweep's jobs: the checks that concern every job, before the first
(`SweepPreflight`), and where the sweep is, "job k of N", time elapsed and an estimate of the
time left, logged as each job starts (`SweepProgress`), so a sweep of long jobs is never silent
about its end. The summary at its end is the report's (`report.summary.SweepSummary`)."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("harness")


def sweep_size(overrides: Sequence[str], params: Optional[dict[str, Any]]) -> Optional[int]:
    """How many jobs the basic sweeper makes of these command-line overrides and the sweep
    file's `hydra.sweeper.params` (the product of each swept key's choices; a key given in
    both is swept once, the command line's way); None when they do not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(
            [*(f"{k}={v}" for k, v in (params or {}).items()), *overrides]
        )
    except Exception:  # a sweep syntax this count does not know: no count rather than a wrong one
        return None
    choices: dict[str, int] = {}
    for override in parsed:
        choices[override.key_or_group] = len(list(override.sweep_iterator())) if override.is_sweep_override() else 1
    return math.prod(choices.values())


def eta_s(done: int, total: int, elapsed_s: float) -> Optional[float]:
    """Seconds left, assuming the jobs left take as long as the finished ones did on average."""
    return elapsed_s / done * (total - done) if done else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class SweepProgress(Callback):
    """Counts jobs in the process that launches them (Hydra's basic launcher runs them there,
    one after another); with launchers that run jobs in other processes it stays silent."""

    def __init__(self) -> None:
        self.total: Optional[int] = None
        self.started: Optional[float] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.sweeper.get("_target_", "").endswith("BasicSweeper"):
            params = OmegaConf.to_container(hydra.sweeper.params, resolve=False) if hydra.sweeper.get("params") else {}
            self.total = sweep_size(list(hydra.overrides.task), params)
        self.started = time.monotonic()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        num = config.hydra.job.get("num")
        if num is None or self.started is None:
            return
        k, elapsed = num + 1, time.monotonic() - self.started
        left = eta_s(num, self.total, elapsed) if self.total else None
        log.info(
            "job %d%s, %s elapsed%s",
            k,
            f" of {self.total}" if self.total else "",
            _minutes(elapsed),
            f", about {_minutes(left)} left" if left is not None else "",
        )


class SweepPreflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep pinned to a GPU stops before its first job on a machine without one."""
        from harness.errors import ConfigError
        from harness.hardware import check_device

        # sweepers that persist (Optuna's SQLite study) write there before any job runs
        Path(config.paths.output_dir).mkdir(parents=True, exist_ok=True)
        try:
            check_device(config.hardware.device)
        except ConfigError as exc:
            log.error("%s (the whole sweep needs it, so no job was started)", exc)
            sys.exit(2)
