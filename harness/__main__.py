"""`python -m harness`: the Hydra app that runs one job, or a sweep of them with -m.

A job that fails (bad config, missing tool, crashed runtime) still writes its record, with
the reason; in a sweep the other jobs go on and the process exits non-zero at the end.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import quiet_known_notices
from harness.config import ConfigError, LoggerConfig, register_configs

log = logging.getLogger("harness")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Optional[tuple[float, ...]]:
    quiet_known_notices()
    from harness.config import serve_as_is, to_job_config
    from harness.pipeline import failed_record, run_job, write_job_record
    from harness.report.summary import print_table, sweep_group
    from harness.report.wandb_log import log_job

    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        serve_as_is(cfg, hydra_cfg.overrides.task)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        record = run_job(to_job_config(cfg), resolved)
    except Exception as exc:  # a failed job is a result to record, not a crash of the sweep
        log.error("job failed: %s: %s", type(exc).__name__, exc)
        record = failed_record(resolved, exc)
    path = write_job_record(job_dir, record)
    log.info("record: %s", path)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        logger = LoggerConfig(**resolved["logger"])
    except (ConfigError, TypeError) as exc:
        log.warning("W&B: not logging this job, its logger config is invalid: %s", exc)
    else:
        group = sweep_group(job_dir.parent if multirun else job_dir)
        log_job(record, logger, group=group, name=",".join(hydra_cfg.overrides.task) or "defaults")
    if not multirun:
        print_table([record], f"job {job_dir}")
        if record["status"] != "ok":
            sys.exit(1)
        return None
    return objective_values(record, list(cfg.objectives))


def objective_values(record: dict, objectives: list[str]) -> Optional[tuple[float, ...]]:
    """The record's objectives for an optimising sweeper; None (a failed trial) when the job
    failed or an objective was not measured, which the sweeper records and moves past."""
    values = [record.get("metrics", {}).get(name) for name in objectives] if record["status"] == "ok" else [None]
    if None in values:
        log.info("no objective values for an optimising sweeper (it records a failed trial): %s",
                 record.get("error") or f"unmeasured among {objectives}")
        return None
    return tuple(float(v) for v in values)


if __name__ == "__main__":
    main()
