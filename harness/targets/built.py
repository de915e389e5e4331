"""A model built here: its stages, each cached under a key of exactly its inputs and each run
in a spawned process with a time limit (`build_timeout_s`), so a native crash or a hang in
one becomes a failed record and no library patch leaks into the next job:

    base model -> fine-tuned (and merged) -> artifact [-> artifact built from it]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness import stages
from harness.config import JobConfig
from harness.formats import BuildInputs, Format, parameter_count
from harness.isolated import isolated_build
from harness.sources import BuiltSource
from harness.store import dir_size_mib, read_json
from harness.targets import Prepared, link, local_machine, local_measurement, record_stage


@dataclass
class Artifact:
    path: Path  # a checkpoint directory, or a single file
    key: str
    info: dict


def build_artifact(
    quant: Format, model_dir: Path, model_key: str, inputs: BuildInputs, cache_root: Path, timeout_s: float
) -> Artifact:
    """The artifact of `quant` built from the checkpoint `model_dir` (or from the artifact the
    format builds it from), cached under (its source's key, the format's key parts, the
    tool's version)."""
    source = quant.source()
    if source is not None:
        parent = build_artifact(source, model_dir, model_key, inputs, cache_root, timeout_s)
        source_dir, source_key = parent.path if parent.path.is_dir() else parent.path.parent, parent.key
    else:
        source_dir, source_key = model_dir, model_key
    tool, version = quant.tool()
    stage = stages.artifact(source_key, quant.key_parts(inputs), version)
    directory = stage.cached(
        cache_root,
        isolated_build(
            f"quantize-{quant.name}", quant.build, {"source": source_dir, "inputs": inputs}, timeout_s, inputs.device
        ),
    )
    path = quant.artifact_path(directory)
    size_mib = sum(dir_size_mib(p) for p in quant.weight_files(path))
    n_params = parameter_count(model_dir)
    info = {
        "format": quant.format,
        "bits": quant.bits,
        **quant.describe(),
        **quant.built_facts(path),
        "size_mib": size_mib,
        "bits_per_weight": size_mib * 2**20 * 8 / n_params,
        "n_params": n_params,
        "tool": tool,
        "tool_version": version,
        "quantize_wall_s": read_json(directory / "build" / "wall.json")["wall_s"],
    }
    return Artifact(path, stage.key, info)


def _numerics_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft")}


class BuiltTarget:
    def __init__(self, job: JobConfig):
        assert job.quant is not None  # a model built here is built by its quant
        self.job = job
        self.source = job.model.origin
        assert isinstance(self.source, BuiltSource)
        self.cache = Path(job.paths.cache_dir).resolve()

    def preflight(self) -> None:
        from harness.hardware import check_device

        self.source.check_available(self.job.model)
        self.job.quant.check(self.job.paths.llama_cpp_dir, self.job.paths.llama_cpp_bin)
        self.job.train.check()
        check_device(self.job.hardware.device)

    def _trained(self, base_dir: Path, base_key: str, data_dir: Path, system: str) -> tuple[Path, str, Optional[dict]]:
        """(checkpoint dir, its key, training facts or None) for the configured train method."""
        job = self.job
        if job.train.method == "none":
            return base_dir, base_key, None
        from harness.train.finetune import TRAINING_VERSION, fine_tune

        adapter = stages.adapter(
            base_key,
            data_dir.name,
            job.train.key_inputs(),
            system,
            job.hardware.device,
            _numerics_versions(),
            TRAINING_VERSION,
        )
        # one spawned process trains the adapter and merges it: the merge always follows, and a
        # second process would pay torch's and peft's imports again
        tuned = adapter.cached(
            self.cache,
            isolated_build(
                "fine-tune",
                fine_tune,
                {
                    "base_dir": base_dir,
                    "data_dir": data_dir,
                    "cfg": job.train,
                    "system": system,
                    "device": job.hardware.device,
                },
                job.build_timeout_s,
                job.hardware.device,
            ),
            force=job.train.force,
        )
        facts = {"adapter_key": adapter.key, **read_json(tuned / "adapter" / "train_log.json")}
        return tuned / "merged", stages.merged(adapter.key).key, facts

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        from transformers import AutoTokenizer

        job = self.job
        threads = job.hardware.threads_used
        base_dir, base_key = self.source.base_model_dir(job.model, self.cache, job.build_timeout_s)
        model_dir, model_key, train_facts = self._trained(base_dir, base_key, data_dir, system)
        inputs = BuildInputs(
            str(data_dir),
            system,
            threads,
            job.hardware.device,
            job.paths.llama_cpp_dir,
            job.paths.llama_cpp_bin,
            str(self.cache),
        )
        artifact = build_artifact(job.quant, model_dir, model_key, inputs, self.cache, job.build_timeout_s)
        job.quant.verify(artifact.path)
        machine, bandwidth = local_machine(job)
        record = record_stage(artifact.key, data_dir.name, job, threads, system, machine)

        return Prepared(
            measurement=local_measurement(
                job,
                artifact.path,
                job.quant,
                lambda: AutoTokenizer.from_pretrained(model_dir),
                data_dir,
                system,
                labels,
            ),
            record=record,
            artifact_info={**artifact.info, "weights_origin": self.source.weights_origin(job.model)},
            train_facts=train_facts,
            keys={
                "dataset": data_dir.name,
                "base": base_key,
                "model": model_key,
                "artifact": artifact.key,
                "record": record.key,
            },
            machine=machine,
            bandwidth=bandwidth,
            lineage=[
                link("dataset", data_dir.name, data_dir),
                link("model", model_key, model_dir),
                link("artifact", artifact.key, artifact.path),
            ],
            packages=job.quant.PACKAGES,
        )
