"""`python -m harness`: the Hydra app that runs one job, or a sweep of them with -m.

A job that fails (bad config, missing tool, crashed runtime) still writes its record, with
the reason; in a sweep the other jobs go on and the process exits non-zero at the end. In a
sweep over formats and widths, a cell that does not exist (bnb at 3 bits) is recorded as
skipped, with the reason, and does not fail the sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import quiet_known_notices
from harness.config import register_configs
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.config import JobConfig
    from harness.record import Record
    from harness.report.config import LoggerConfig

log = logging.getLogger("harness")
register_configs()


# An absolute path: the console script imports this module rather than running it, and Hydra
# would then read a relative path as a Python package.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> Optional[tuple[float, ...]]:
    quiet_known_notices()
    from harness.config import to_job_config
    from harness.errors import UnsupportedCell
    from harness.formats import quant_name
    from harness.job_info import job_info
    from harness.pipeline import run_job, write_job_record
    from harness.record import FAILED, OK, SKIPPED, job_label, unfinished_record
    from harness.report.summary import print_table, sweep_group
    from harness.report.wandb_log import job_run, log_job

    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # the variant's derived name, in the record's config as everywhere else
    resolved["quant"] = {"name": quant_name(cfg.quant), **resolved["quant"]}
    logger = job_logger(resolved["logger"])
    group = sweep_group(job_dir.parent if multirun else job_dir)
    live_run = None
    with contextlib.ExitStack() as stack:
        try:
            job = to_job_config(cfg, list(hydra_cfg.overrides.task))
            resolved = as_run(job, resolved)
            info = job_info(resolved)
            # the run starts with the job, so its fine-tuning and progress are there live
            live_run = stack.enter_context(job_run(logger, group, job_label(info), info, resolved))
            record = run_job(job, resolved)
        except UnsupportedCell as exc:
            log.warning("%s: %s", "skipped" if multirun else "cannot run", exc)
            record = unfinished_record(SKIPPED if multirun else FAILED, job_info(resolved), resolved, exc)
        except Exception as exc:  # a failed job is a result to record, not a crash of the sweep
            log.error("job failed: %s: %s", type(exc).__name__, exc)
            record = unfinished_record(FAILED, job_info(resolved), resolved, exc)
        path = write_job_record(job_dir, record)
        log.info("record: %s", path)
        if record.status != SKIPPED:
            log_job(record, logger, group=group, name=job_label(record.job), live_run=live_run)
    if not multirun:
        print_table([record], f"job {job_dir}")
        if record.status != OK:
            sys.exit(1)
        return None
    return objective_values(record, list(cfg.objectives))


def job_logger(section: dict) -> LoggerConfig:
    """The job's W&B logging: an invalid logger config costs the job its logging, not its run."""
    from harness.report.config import LoggerConfig

    try:
        return LoggerConfig(**section)
    except (ConfigError, TypeError) as exc:
        log.warning("W&B: not logging this job, its logger config is invalid: %s", exc)
        return LoggerConfig(name="none")


def as_run(job: JobConfig, resolved: dict) -> dict:
    """The resolved config as the job runs it: no quant and no training for a model that is
    not built here, and no endpoint for one that is not hosted."""
    return {
        **resolved,
        "quant": job.quant and {"name": job.quant.name, **dataclasses.asdict(job.quant)},
        "train": dataclasses.asdict(job.train),
        "model": {**resolved["model"], "api": job.model.api and dataclasses.asdict(job.model.api)},
    }


def objective_values(record: Record, objectives: list[str]) -> Optional[tuple[float, ...]]:
    """The record's objectives for an optimising sweeper; None (a failed trial) when the job
    failed or an objective was not measured, which the sweeper records and moves past."""
    from harness.record import OK
    from harness.report.records import point

    values = [point(record, []).value(name) for name in objectives] if record.status == OK else [None]
    if None in values:
        log.info(
            "no objective values for an optimising sweeper (it records a failed trial): %s",
            record.error or f"unmeasured among {objectives}",
        )
        return None
    return tuple(float(v) for v in values)


def cli() -> None:
    """`python -m harness` and the `slm-harness` script: a retired override, or a missing
    launcher or sweeper plugin, is named with its fix before Hydra starts."""
    from harness.config import check_retired
    from harness.extras import check_plugins

    try:
        check_retired(sys.argv[1:])
        check_plugins(sys.argv[1:], Path(CONF_DIR))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    main()


if __name__ == "__main__":
    cli()
