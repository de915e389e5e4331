"""What a job measures, one target per kind of model (`harness.sources`): an artifact built
here through cached stages (`built`), a model file measured as it is (`file`), or a hosted
endpoint measured as served (`endpoint`). Each owns its checks, and all answer the same two
calls, chosen once per job:

    target.preflight()                       seconds-long checks before any heavy work
    target.prepare(data_dir, system, labels) build what is needed; how to measure it
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from harness import stages
from harness.config import JobConfig
from harness.isolated import run_isolated
from harness.record import MEASURE_VERSION
from harness.runtimes import Opener
from harness.store import Stage


@dataclass
class Prepared:
    """What the stages before the measurement produced, the measurement itself, and the
    stage its record is cached as."""

    measurement: Callable[[Path], dict]
    record: Stage
    artifact_info: dict
    train_facts: Optional[dict]
    # every stage's key, the record's among them
    keys: dict[str, str]
    # the identity of the machine that measures (None: a remote endpoint's)
    machine: Optional[dict]
    # that machine's measured memory bandwidth (harness.measure.bandwidth; None: an endpoint)
    bandwidth: Optional[dict] = None
    # Where the measured thing came from, upstream first: each stage's output as
    # {"stage", "key", "path"} (dataset -> model -> artifact), for W&B's lineage.
    lineage: list[dict] = dataclasses.field(default_factory=list)
    # Python distributions the measurement ran on, whose versions the record lists.
    packages: tuple[str, ...] = ()


def link(stage: str, key: str, path: Path) -> dict:
    return {"stage": stage, "key": key, "path": str(path.resolve())}


def record_stage(
    artifact_key: str,
    data_key: str,
    job: JobConfig,
    threads: int,
    system: str,
    machine: dict,
    version: int = MEASURE_VERSION,
) -> Stage:
    """A record is reused only for the same artifact, data, hardware and measurement config,
    measured on the same kind of machine by the same version of the measurement code. What
    only the report reads (the machine's price; the latency objective, unless a served load's
    bisection steers by it) is no measurement's input."""
    hardware = {k: v for k, v in dataclasses.asdict(job.hardware).items() if k != "usd_per_hour"}
    served = job.measure.serve == "server"
    measure = {k: v for k, v in job.measure.keyed().items() if served or k != "slo_p95_ms"}
    return stages.record(artifact_key, data_key, hardware, measure, threads, system, machine, version)


class Target(Protocol):
    def preflight(self) -> None: ...

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared: ...


def target_for(job: JobConfig) -> Target:
    return job.model.origin.target(job)


def local_measurement(
    job: JobConfig,
    artifact: Path,
    opener: Opener,
    load_tokenizer: Callable[[], Any],
    data_dir: Path,
    system: str,
    labels: list[str],
) -> Callable[[Path], dict]:
    """The measurement of a local artifact, in a spawned process that holds only the runtime."""
    from harness.measure.predictions import test_rows
    from harness.measure.run import MeasureSpec, measure_artifact
    from harness.prompt import render_prompt

    def run(out: Path) -> dict:
        # rendered only when a measurement runs: a reused record needs no tokenizer
        tokenizer = load_tokenizer()
        rows = test_rows(data_dir, job.measure)
        prompts = [render_prompt(tokenizer, r["text"], system) for r in rows]
        spec = MeasureSpec(
            artifact=str(artifact),
            prompts=prompts,
            data_dir=str(data_dir),
            opener=opener,
            hardware=job.hardware,
            measure=job.measure,
            threads=job.hardware.threads_used,
            system=system,
            labels=labels,
            out_dir=str(out),
        )
        measured = run_isolated(
            "measure",
            measure_artifact,
            {"spec": spec},
            out,
            job.measure.timeout_s,
            "measure.timeout_s",
            job.hardware.device,
        )
        if job.measure.serve == "server":
            measured["served"] = served_load(job, artifact, prompts, rows, labels, out, measured["metrics"])
        return measured

    return run


def served_load(
    job: JobConfig, gguf: Path, prompts: list[str], rows: list[dict], labels: list[str], out: Path, metrics: dict
) -> dict:
    """The served section, after the in-process measurement and outside its process: the
    measuring process has let the model go before the server loads its own copy, and the load
    runs here, in the job's process, so the server dies with it (harness.measure.server) even
    when the sweep is killed outright; a server crash is the server's, not the sweep's."""
    from harness.measure.served import measure_served
    from harness.record import Metrics
    from harness.report.serving import capacity_at

    in_process = capacity_at(Metrics.from_flat(metrics).latency.load_curve, job.measure.slo_p95_ms)
    return measure_served(
        gguf,
        prompts,
        [r["intent"] for r in rows],
        labels,
        job.measure,
        job.hardware.threads_used,
        job.paths.llama_cpp_bin,
        Path(job.paths.cache_dir).resolve() / "servers",
        out,
        in_process.queries_per_s if in_process else None,
        gpu=job.hardware.device == "cuda",
    )


def local_machine(job: JobConfig) -> tuple[dict, dict]:
    """(the identity of the machine that measures, its memory bandwidth, measured once per machine)."""
    from harness.measure.bandwidth import memory_bandwidth
    from harness.measure.machine import machine_identity
    from harness.measure.window import lock_path

    machine = machine_identity(job.hardware.device)
    cache = Path(job.paths.cache_dir).resolve()
    threads = job.hardware.threads_used
    lock = lock_path(job.paths.measure_lock)
    return machine, memory_bandwidth(cache, machine, job.hardware.device, threads, job.build_timeout_s, lock)
