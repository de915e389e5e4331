"""A hosted model, measured as its provider serves it behind an OpenAI-compatible endpoint
(`model.source=api`, `model.api`): nothing is built, and the weights' width is unknown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import stages
from harness.config import JobConfig
from harness.extras import require
from harness.record import MEASURE_VERSION
from harness.targets import Prepared, link


class EndpointTarget:
    """No stages of its own. Nothing native runs here, so the measurement needs no separate
    process; every request has its own timeout."""

    def __init__(self, job: JobConfig):
        assert job.model.api is not None
        self.job = job
        self.api = job.model.api

    def preflight(self) -> None:
        from harness.runtimes.openai_compatible import OpenAICompatibleRuntime

        require(f"model={self.job.model.name} (a hosted model)", ("openai",), "hosted")
        OpenAICompatibleRuntime(self.api, self.job.measure.max_new_tokens).check_reachable()

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        from harness.measure.hosted import measure_hosted
        from harness.runtimes.openai_compatible import OpenAICompatibleRuntime

        api, job = self.api, self.job
        record = stages.hosted_record(
            dataclasses.asdict(api), data_dir.name, job.measure.keyed(), system, MEASURE_VERSION
        )
        return Prepared(
            measurement=lambda out: measure_hosted(api, job.measure, data_dir, system, labels, out),
            record=record,
            artifact_info={
                "format": "hosted",
                "size_mib": None,
                "bits_per_weight": None,
                "tool": OpenAICompatibleRuntime.name,
                "base_url": api.base_url,
                "model_name": api.model_name,
            },
            train_facts=None,
            keys={"dataset": data_dir.name, "record": record.key},
            machine=None,
            lineage=[link("dataset", data_dir.name, data_dir)],
            packages=("openai",),
        )
