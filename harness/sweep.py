"""Hydra callbacks around a sweep's jobs: the checks that concern every job, before the first
(`SweepPreflight`), and where the sweep is, "job k of N", time elapsed and an estimate of the
time left, logged as each job starts (`SweepProgress`), so a sweep of long jobs is never silent
about its end. The summary at its end is the report's (`report.summary.SweepSummary`)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("harness")


def sweep_jobs(overrides: Sequence[str], params: Optional[dict[str, Any]]) -> Optional[list[list[str]]]:
    """The jobs the basic sweeper makes of these command-line overrides and the sweep file's
    `hydra.sweeper.params`, in its order, each as its overrides ("key=value"); a key given in
    both is swept once, the command line's way. None when they do not parse."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(
            [*(f"{k}={v}" for k, v in (params or {}).items()), *overrides]
        )
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # a sweep syntax this does not know: no estimate rather than a wrong one
        return None


def sweep_size(overrides: Sequence[str], params: Optional[dict[str, Any]]) -> Optional[int]:
    """How many jobs the basic sweeper makes (`sweep_jobs`); None when they do not parse."""
    jobs = sweep_jobs(overrides, params)
    return len(jobs) if jobs is not None else None


# The config groups each stage's key depends on, its upstream stages' included; an override of
# a key of any other group (seed, one this list does not know) is taken to change every stage,
# and one of these groups no stage at all. The record depends on everything.
STAGE_INPUTS = {
    "dataset": ("dataset", "language"),
    "base": ("model",),
    "adapter": ("model", "dataset", "language", "train", "hardware"),
    "imatrix": ("model", "dataset", "language", "train", "hardware"),
    "artifact": ("model", "dataset", "language", "train", "hardware", "quant"),
    "bandwidth": ("hardware",),
}
NO_STAGE = ("logger", "report", "hydra", "objectives", "measure")


def _group(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0].split("@", 1)[0]


def stage_identity(stage: str, job: Sequence[str]) -> tuple:
    """What tells one job's entry of `stage` from another's, as far as its overrides show."""
    inputs = STAGE_INPUTS.get(stage)
    known = {g for groups in STAGE_INPUTS.values() for g in groups} | set(NO_STAGE)
    kept = [o for o in job if inputs is None or _group(o) in inputs or _group(o) not in known]
    return (stage, tuple(sorted(kept)))


def time_left_s(
    jobs: Sequence[Sequence[str]], history: Sequence[Sequence[tuple[str, Optional[float]]]]
) -> tuple[float, bool]:
    """(seconds the jobs after the `len(history)` finished ones will take, whether that is all
    of it). `jobs`: every job's overrides, in order; `history`: each finished job's stage
    lookups, (stage, seconds built, or None: found in the cache). A stage costs nothing where a
    job before it, finished or not, has the same entry (as far as the overrides tell: same
    values of the groups it depends on), since the cache then holds it; otherwise what that
    stage's last build took (a measurement what the last one did), or is unknown (the estimate
    is then a lower bound). Stages no finished job looked up are not counted."""
    stages = list(dict.fromkeys(stage for lookups in history for stage, _ in lookups))
    cost = {stage: s for lookups in history for stage, s in lookups if s is not None}
    seen = {stage_identity(stage, job) for job, lookups in zip(jobs, history) for stage, _ in lookups}
    # before any job has finished nothing is known: no estimate, rather than "about 0 s"
    total, complete = 0.0, bool(history)
    for job in jobs[len(history) :]:
        for stage in stages:
            identity = stage_identity(stage, job)
            if identity in seen:
                continue
            seen.add(identity)
            if stage in cost:
                total += cost[stage]
            else:
                complete = False
    return total, complete


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _left(seconds: float, complete: bool) -> str:
    if complete:
        return f", about {_minutes(seconds)} left"
    return f", at least {_minutes(seconds)} left" if seconds else ""


class SweepProgress(Callback):
    """Counts jobs in the process that launches them (Hydra's basic launcher runs them there,
    one after another), and estimates the time left from what each job still has to build
    (`time_left_s`); with launchers that run jobs in other processes it stays silent."""

    def __init__(self) -> None:
        self.jobs: Optional[list[list[str]]] = None
        self.started: Optional[float] = None
        self.history: list[list[tuple[str, Optional[float]]]] = []
        self.lookups_from = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.sweeper.get("_target_", "").endswith("BasicSweeper"):
            params = OmegaConf.to_container(hydra.sweeper.params, resolve=False) if hydra.sweeper.get("params") else {}
            self.jobs = sweep_jobs(list(hydra.overrides.task), params)
        self.started = time.monotonic()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from harness.store import LOOKUPS

        num = config.hydra.job.get("num")
        if num is None or self.started is None:
            return
        self.lookups_from = len(LOOKUPS)
        elapsed = time.monotonic() - self.started
        total = len(self.jobs) if self.jobs else None
        left = _left(*time_left_s(self.jobs, self.history)) if self.jobs and len(self.history) == num else ""
        log.info("job %d%s, %s elapsed%s", num + 1, f" of {total}" if total else "", _minutes(elapsed), left)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from harness.store import LOOKUPS

        if self.started is not None:
            self.history.append(LOOKUPS[self.lookups_from :])


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
