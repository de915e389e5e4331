"""One job: the dataset, then its target's stages, then the measurement, as one record.

    dataset -> target.prepare (base -> fine-tuned -> artifact; a model file; an endpoint) -> measure

Each stage's key hashes exactly its inputs and the keys before it, so a sweep over eight
quantizations fine-tunes once, and re-running a finished sweep reuses its records.
Everything that can be checked without heavy work is checked first (`target.preflight`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.config import JobConfig
from harness.data.dataset import build_dataset, read_labels
from harness.job_info import job_info
from harness.measure.environment import environment
from harness.measure.window import exclusive_window, lock_path
from harness.prompt import system_prompt
from harness.record import MEASURE_VERSION, RECORD, Record
from harness.sources import ENDPOINT
from harness.store import remove_stale_builds, write_json_atomic
from harness.targets import target_for

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def run_job(job: JobConfig, resolved_config: dict[str, Any]) -> Record:
    """Run every stage of one job and return its (successful) record."""
    started = datetime.now(timezone.utc)
    target = target_for(job)
    target.preflight()
    if job.measure.serve == "server":
        from harness.measure.server import check_port_free, server_binary

        # before any work: a missing binary names `make llama-server`; a configured port taken
        # now is named now (one taken later is named when the server starts)
        server_binary(job.paths.llama_cpp_bin)
        if job.measure.server_port:
            check_port_free(job.measure.server_port)
    if job.train.method == "none" and job.measure.decoding == "free" and job.model.kind != ENDPOINT:
        log.warning(
            "train=none: a model not fine-tuned here may not write the answer format, and a free answer "
            "that is not one is invalid; measure.decoding=labels gives the zero-shot baseline "
            "(greedy within the label set)"
        )
    cache = Path(job.paths.cache_dir).resolve()
    remove_stale_builds(cache)
    data_dir = build_dataset(job.dataset, job.language.selection(job.dataset.kind), cache)
    labels = read_labels(data_dir)
    list_labels = job.model.list_labels if job.model.list_labels is not None else job.train.method == "none"
    system = system_prompt(job.model.system_prompt, labels, list_labels)
    prepared = target.prepare(data_dir, system, labels)

    def measure_and_record(out: Path) -> None:
        # one measurement at a time on this machine: the wait is before any figure starts
        with exclusive_window(lock_path(job.paths.measure_lock)) as window:
            t0 = time.perf_counter()
            measured = prepared.measurement(out)
            measure_wall_s = time.perf_counter() - t0
        # the sections as the measuring process and the stages wrote them (JSON), typed as read
        record = Record.from_json(
            {
                **measured,
                "runtime": {**measured["runtime"], "measure_window": window},
                "artifact": prepared.artifact_info,
                "train": prepared.train_facts,
                "keys": prepared.keys,
                "lineage": prepared.lineage,
                "config": resolved_config,
                "machine": prepared.machine,
                "bandwidth": prepared.bandwidth,
                "environment": environment(REPO_ROOT, prepared.packages),
                "measure_version": MEASURE_VERSION,
                "started_at": started.isoformat(timespec="seconds"),
                "measure_wall_s": measure_wall_s,
            }
        )
        record.job = job_info(resolved_config)
        write_json_atomic(out / RECORD, record.to_json())

    record_dir = prepared.record.cached(cache, measure_and_record, force=job.force)
    record = Record.read(record_dir / RECORD)
    record.record_dir = str(record_dir)
    return record


def write_job_record(job_dir: Path, record: Record) -> Path:
    path = job_dir / RECORD
    write_json_atomic(path, record.to_json())
    return path
