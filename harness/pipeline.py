"""One job: the chain of cached stages, from dataset to result record.

    dataset -> base model -> adapter -> merged -> artifact -> measurement (fresh process)

Each stage's key hashes exactly its inputs and the keys before it, so a sweep over eight
quantizations fine-tunes once, and re-running a finished sweep reuses its records.
Everything that can be checked without heavy work is checked first (`preflight`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from harness.config import ConfigError, JobConfig
from harness.data.dataset import build_dataset, read_labels
from harness.measure.environment import environment
from harness.measure.isolated import run_isolated
from harness.measure.run import MeasureSpec
from harness.models import base_model_dir, check_available
from harness.prompt import system_prompt
from harness.quantize.artifact import build_artifact, check_supported
from harness.report.records import RECORD
from harness.store import cache_key, cached_dir, read_json, write_json_atomic

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def threads_for(job: JobConfig) -> int:
    return job.hardware.threads or os.cpu_count() or 1


def preflight(job: JobConfig) -> None:
    """Seconds-long checks that would otherwise fail after minutes of training."""
    if job.model.source == "api":
        from harness.runtimes.openai_compatible import OpenAICompatibleRuntime

        assert job.model.api is not None
        OpenAICompatibleRuntime(job.model.api, job.measure.max_new_tokens).check_reachable()
        return
    check_available(job.model)
    check_supported(job.quant, job.paths.llama_cpp_dir)
    check_device(job.hardware.device)


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware=cuda but no CUDA device is visible; use hardware=cpu on this machine")


def _numerics_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def _trained_model(job: JobConfig, base_dir: Path, base_key: str, data_dir: Path, data_key: str, system: str):
    """(checkpoint dir, its key, training facts or None) for the configured train method."""
    if job.train.method == "none":
        return base_dir, base_key, None
    from harness.train.lora import merge_adapter, train_adapter

    train_inputs = {k: v for k, v in dataclasses.asdict(job.train).items() if k not in ("name", "force")}
    adapter_key = cache_key(
        "adapter", base_key, data_key, train_inputs, system, job.hardware.device, _numerics_versions()
    )
    adapter_dir = cached_dir(
        job_cache(job), "adapter", adapter_key,
        lambda out: train_adapter(base_dir, data_dir, job.train, system, job.hardware.device, out),
        force=job.train.force,
    )
    merged_key = cache_key("merged", adapter_key)
    merged_dir = cached_dir(
        job_cache(job), "merged", merged_key, lambda out: merge_adapter(base_dir, adapter_dir, out),
        force=job.train.force,
    )
    train_log = read_json(adapter_dir / "train_log.json")
    return merged_dir, merged_key, {"adapter_key": adapter_key, **train_log}


def job_cache(job: JobConfig) -> Path:
    return Path(job.paths.cache_dir).resolve()


def run_job(job: JobConfig, resolved_config: dict[str, Any]) -> dict[str, Any]:
    """Run every stage of one job and return its (successful) record."""
    started = datetime.now(timezone.utc)
    preflight(job)
    cache = job_cache(job)
    data_dir = build_dataset(job.dataset, sorted(job.language.codes), cache)
    labels = read_labels(data_dir)
    system = system_prompt(job.model.system_prompt, labels, list_labels=job.train.method == "none")
    if job.model.source == "api":
        stages = _hosted_stages(job, data_dir, system, labels)
    else:
        stages = _local_stages(job, data_dir, system, labels)

    def measure(out: Path) -> None:
        t0 = time.perf_counter()
        measured = stages.measure(out)
        record = {
            "status": "ok",
            "job": job_summary(job),
            **measured,
            "artifact": stages.artifact_info,
            "train": stages.train_facts,
            "keys": stages.keys,
            "config": resolved_config,
            "environment": environment(REPO_ROOT),
            "started_at": started.isoformat(timespec="seconds"),
            "measure_wall_s": time.perf_counter() - t0,
        }
        write_json_atomic(out / RECORD, record)

    record_dir = cached_dir(cache, "records", stages.keys["record"], measure, force=job.force)
    record = read_json(record_dir / RECORD)
    record["record_dir"] = str(record_dir)
    return record


@dataclasses.dataclass
class Stages:
    """What the stages before the measurement produced, and the measurement itself."""

    measure: Callable[[Path], dict]
    artifact_info: dict
    train_facts: Optional[dict]
    keys: dict[str, str]


def _local_stages(job: JobConfig, data_dir: Path, system: str, labels: list[str]) -> Stages:
    cache = job_cache(job)
    threads = threads_for(job)
    data_key = data_dir.name
    base_dir, base_key = base_model_dir(job.model, cache)
    model_dir, model_key, train_facts = _trained_model(job, base_dir, base_key, data_dir, data_key, system)
    artifact = build_artifact(
        model_dir, model_key, job.quant, cache, threads, job.paths.llama_cpp_dir, job.hardware.device, data_dir, system
    )
    spec = MeasureSpec(
        artifact=str(artifact.path),
        tokenizer_dir=str(model_dir),
        data_dir=str(data_dir),
        quant=job.quant,
        hardware=job.hardware,
        measure=job.measure,
        threads=threads,
        system=system,
        labels=labels,
        out_dir="",
    )
    record_key = cache_key("record", artifact.key, data_key, job.hardware, job.measure, threads, system)
    return Stages(
        measure=lambda out: run_isolated(dataclasses.replace(spec, out_dir=str(out)), out, job.measure.timeout_s),
        artifact_info=artifact.info,
        train_facts=train_facts,
        keys={"dataset": data_key, "base": base_key, "model": model_key, "artifact": artifact.key, "record": record_key},
    )


def _hosted_stages(job: JobConfig, data_dir: Path, system: str, labels: list[str]) -> Stages:
    """A hosted model has no stages of its own: it is measured as served. Nothing native runs
    here, so the measurement needs no separate process; every request has its own timeout."""
    from harness.measure.hosted import measure_hosted

    api = job.model.api
    assert api is not None
    record_key = cache_key("record", "hosted", dataclasses.asdict(api), data_dir.name, job.measure, system)
    return Stages(
        measure=lambda out: measure_hosted(api, job.measure, data_dir, system, labels, out),
        artifact_info={"format": "hosted", "size_mib": None, "bits_per_weight": None, "tool": "openai_compatible",
                       "base_url": api.base_url, "model_name": api.model_name},
        train_facts=None,
        keys={"dataset": data_dir.name, "record": record_key},
    )


def job_summary(job: JobConfig) -> dict[str, Any]:
    return {
        "model": job.model.name,
        "quant": job.quant.name,
        "format": job.quant.format,
        "bits": job.quant.bits,
        "gguf_type": job.quant.gguf_type,
        "hardware": job.hardware.name,
        "train": job.train.name,
        "languages": sorted(job.language.codes),
    }


def failed_record(resolved_config: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {
        "status": "failed",
        "error_type": type(exc).__name__,
        "error": str(exc),
        "job": {
            "model": resolved_config.get("model", {}).get("name"),
            "quant": resolved_config.get("quant", {}).get("name"),
            "hardware": resolved_config.get("hardware", {}).get("name"),
            "train": resolved_config.get("train", {}).get("name"),
            "languages": sorted(resolved_config.get("language", {}).get("codes") or {}),
        },
        "config": resolved_config,
        "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_job_record(job_dir: Path, record: dict[str, Any]) -> Path:
    path = job_dir / RECORD
    write_json_atomic(path, record)
    return path
