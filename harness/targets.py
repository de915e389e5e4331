"""What a job measures: a local artifact (built here through cached stages) or a hosted
endpoint (measured as served). Both answer the same two calls, chosen once per job:

    target.preflight()                       seconds-long checks before any heavy work
    target.prepare(data_dir, system, labels) build what is needed; how to measure it

Local stages, each cached under a key of exactly its inputs and each run in a spawned
process with a time limit (`build_timeout_s`), so a native crash or a hang in one becomes a
failed record and no library patch leaks into the next job:

    base model -> (Q)LoRA adapter -> merged -> artifact [-> artifact built from it]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from harness.config import JobConfig
from harness.formats import BuildInputs, QuantConfig, parameter_count
from harness.isolated import isolated_build, run_isolated
from harness.measure.bandwidth import memory_bandwidth
from harness.measure.machine import machine_identity
from harness.record import MEASURE_VERSION
from harness.store import cache_key, cached_dir, dir_size_mib, read_json


@dataclass
class Prepared:
    """What the stages before the measurement produced, and the measurement itself."""

    measure: Callable[[Path], dict]
    artifact_info: dict
    train_facts: Optional[dict]
    keys: dict[str, str]
    # the identity of the machine that measures (None: a remote endpoint's)
    machine: Optional[dict]
    # that machine's measured memory bandwidth (harness.measure.bandwidth; None: an endpoint)
    bandwidth: Optional[dict] = None
    # Where the measured thing came from, upstream first: each stage's output as
    # {"stage", "key", "path"} (dataset -> model -> artifact), for W&B's lineage.
    lineage: list[dict] = dataclasses.field(default_factory=list)


def link(stage: str, key: str, path: Path) -> dict:
    return {"stage": stage, "key": key, "path": str(path.resolve())}


def record_key(
    artifact_key: str,
    data_key: str,
    job: JobConfig,
    threads: int,
    system: str,
    machine: dict,
    version: int = MEASURE_VERSION,
) -> str:
    """A record is reused only for the same artifact, data, hardware and measurement config,
    measured on the same kind of machine by the same version of the measurement code. What
    only the report reads (the machine's price, the latency objective) is no measurement's input."""
    hardware = {k: v for k, v in dataclasses.asdict(job.hardware).items() if k != "usd_per_hour"}
    measure = {k: v for k, v in dataclasses.asdict(job.measure).items() if k != "slo_p95_ms"}
    return cache_key("record", artifact_key, data_key, hardware, measure, threads, system, machine, version)


class Target(Protocol):
    def preflight(self) -> None: ...

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared: ...


def target_for(job: JobConfig) -> Target:
    if job.quant.HOSTED:
        return HostedTarget(job)
    return AsGivenTarget(job) if job.quant.AS_GIVEN else LocalTarget(job)


def local_measurement(
    job: JobConfig, artifact: Path, load_tokenizer: Callable[[], Any], data_dir: Path, system: str, labels: list[str]
) -> Callable[[Path], dict]:
    """The measurement of a local artifact, in a spawned process that holds only the runtime."""
    from harness.measure.run import MeasureSpec, measure, test_rows
    from harness.prompt import render_prompt

    def run(out: Path) -> dict:
        # rendered only when a measurement runs: a reused record needs no tokenizer
        tokenizer = load_tokenizer()
        prompts = [render_prompt(tokenizer, r["text"], system) for r in test_rows(data_dir, job.measure)]
        spec = MeasureSpec(
            artifact=str(artifact),
            prompts=prompts,
            data_dir=str(data_dir),
            quant=job.quant,
            hardware=job.hardware,
            measure=job.measure,
            threads=job.hardware.threads_used,
            system=system,
            labels=labels,
            out_dir=str(out),
        )
        return run_isolated(
            "measure", measure, {"spec": spec}, out, job.measure.timeout_s, "measure.timeout_s", job.hardware.device
        )

    return run


@dataclass
class Artifact:
    path: Path  # a checkpoint directory, or a single file
    key: str
    info: dict


def build_artifact(
    quant: QuantConfig, model_dir: Path, model_key: str, inputs: BuildInputs, cache_root: Path, timeout_s: float
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
    key = cache_key("artifact", source_key, quant.key_parts(inputs), version)
    directory = cached_dir(
        cache_root,
        "artifact",
        key,
        isolated_build(
            f"quantize-{quant.name}", quant.build, {"source": source_dir, "inputs": inputs}, timeout_s, inputs.device
        ),
    )
    path = quant.artifact_path(directory)
    size_mib = dir_size_mib(path) if path.is_file() else sum(dir_size_mib(p) for p in path.glob("*.safetensors"))
    n_params = parameter_count(model_dir)
    info = {
        "format": quant.format,
        "bits": quant.bits,
        **quant.describe(),
        "size_mib": size_mib,
        "bits_per_weight": size_mib * 2**20 * 8 / n_params,
        "n_params": n_params,
        "tool": tool,
        "tool_version": version,
        "quantize_wall_s": read_json(directory / "build" / "wall.json")["wall_s"],
    }
    return Artifact(path, key, info)


def _numerics_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft")}


class LocalTarget:
    def __init__(self, job: JobConfig):
        self.job = job
        self.cache = Path(job.paths.cache_dir).resolve()

    def preflight(self) -> None:
        from harness.hardware import check_device
        from harness.models import check_available

        check_available(self.job.model)
        self.job.quant.check(self.job.paths)
        self.job.train.check()
        check_device(self.job.hardware.device)

    def _trained(self, base_dir: Path, base_key: str, data_dir: Path, system: str) -> tuple[Path, str, Optional[dict]]:
        """(checkpoint dir, its key, training facts or None) for the configured train method."""
        job = self.job
        if job.train.method == "none":
            return base_dir, base_key, None
        from harness.train.finetune import TRAINING_VERSION, fine_tune

        adapter_key = cache_key(
            "adapter",
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
        tuned = cached_dir(
            self.cache,
            "adapter",
            adapter_key,
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
        facts = {"adapter_key": adapter_key, **read_json(tuned / "adapter" / "train_log.json")}
        return tuned / "merged", cache_key("merged", adapter_key), facts

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        from transformers import AutoTokenizer

        from harness.models import base_model_dir, weights_origin

        job = self.job
        threads = job.hardware.threads_used
        base_dir, base_key = base_model_dir(job.model, self.cache, job.build_timeout_s)
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
        machine = machine_identity(job.hardware.device)
        key = record_key(artifact.key, data_dir.name, job, threads, system, machine)
        bandwidth = memory_bandwidth(self.cache, machine, job.hardware.device, threads, job.build_timeout_s)

        return Prepared(
            measure=local_measurement(
                job, artifact.path, lambda: AutoTokenizer.from_pretrained(model_dir), data_dir, system, labels
            ),
            artifact_info={**artifact.info, "weights_origin": weights_origin(job.model)},
            train_facts=train_facts,
            keys={
                "dataset": data_dir.name,
                "base": base_key,
                "model": model_key,
                "artifact": artifact.key,
                "record": key,
            },
            machine=machine,
            bandwidth=bandwidth,
            lineage=[
                link("dataset", data_dir.name, data_dir),
                link("model", model_key, model_dir),
                link("artifact", artifact.key, artifact.path),
            ],
        )


class AsGivenTarget:
    """A model file measured as it is (`quant=as_is`): a GGUF, or a checkpoint directory. Its
    header is checked before any native code opens it; its digest keys the record."""

    def __init__(self, job: JobConfig):
        assert job.model.path is not None
        self.job = job
        self.path = Path(job.model.path).expanduser()
        self.is_gguf = job.model.source == "gguf"

    def preflight(self) -> None:
        from harness.errors import ConfigError
        from harness.hardware import check_device

        self.job.quant.check(self.job.paths)
        if self.path.exists() and self.path.is_dir() == self.is_gguf:
            raise ConfigError(
                f"model.path={self.path} is a {'directory' if self.path.is_dir() else 'file'}: model.source=gguf takes "
                "a .gguf file, model.source=local a checkpoint directory"
            )
        try:
            self.job.quant.verify(self.path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.path: {exc}") from None
        if self.is_gguf and not self.job.model.tokenizer:
            from harness.gguf_header import read_header

            if "tokenizer.chat_template" not in read_header(self.path).keys:
                raise ConfigError(
                    f"model.path={self.path} has no chat template in its metadata, so its prompts cannot be rendered "
                    "as it expects them: give one with model.tokenizer=<a tokenizer directory or hub id>"
                )
        check_device(self.job.hardware.device)

    def _tokenizer(self) -> Any:
        """The tokenizer whose chat template renders the prompts: model.tokenizer if given,
        else the file's own (a GGUF's metadata, a checkpoint's tokenizer files)."""
        from transformers import AutoTokenizer

        if self.job.model.tokenizer:
            return AutoTokenizer.from_pretrained(self.job.model.tokenizer)
        if self.is_gguf:
            return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        return AutoTokenizer.from_pretrained(self.path)

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        import importlib.metadata

        from harness.formats.as_is import checkpoint_facts, gguf_facts

        job = self.job
        facts = gguf_facts(self.path) if self.is_gguf else checkpoint_facts(self.path)
        facts["chat_template_from"] = job.model.tokenizer or ("gguf metadata" if self.is_gguf else "checkpoint")
        # the rendered prompts are keyed by the record (its system prompt, the test split); the
        # file and the runtime that runs it, here
        runtime = "llama_cpp_python" if self.is_gguf else "transformers"
        key = cache_key(
            "as_is", facts["sha256"], facts["chat_template_from"], runtime, importlib.metadata.version(runtime)
        )
        machine = machine_identity(job.hardware.device)
        return Prepared(
            measure=local_measurement(job, self.path, self._tokenizer, data_dir, system, labels),
            artifact_info={
                "format": "gguf" if self.is_gguf else "checkpoint",
                "bits": None,
                **facts,
                "tool": "as given",
                "quantize_wall_s": None,
            },
            train_facts=None,
            keys={
                "dataset": data_dir.name,
                "artifact": key,
                "record": record_key(key, data_dir.name, job, job.hardware.threads_used, system, machine),
            },
            machine=machine,
            bandwidth=memory_bandwidth(
                Path(job.paths.cache_dir).resolve(),
                machine,
                job.hardware.device,
                job.hardware.threads_used,
                job.build_timeout_s,
            ),
            lineage=[link("dataset", data_dir.name, data_dir), link("artifact", key, self.path)],
        )


class HostedTarget:
    """A hosted model has no stages of its own: it is measured as served. Nothing native runs
    here, so the measurement needs no separate process; every request has its own timeout."""

    def __init__(self, job: JobConfig):
        assert job.model.api is not None
        self.job = job
        self.api = job.model.api

    def preflight(self) -> None:
        from harness.runtimes.openai_compatible import OpenAICompatibleRuntime

        self.job.quant.check(None)
        OpenAICompatibleRuntime(self.api, self.job.measure.max_new_tokens).check_reachable()

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        from harness.measure.hosted import measure_hosted

        api, job = self.api, self.job
        # what answers is the endpoint's machine, not this one: no machine in the key
        key = cache_key(
            "record", "hosted", dataclasses.asdict(api), data_dir.name, job.measure, system, MEASURE_VERSION
        )
        return Prepared(
            measure=lambda out: measure_hosted(api, job.measure, data_dir, system, labels, out),
            artifact_info={
                "format": job.quant.format,
                "size_mib": None,
                "bits_per_weight": None,
                "tool": job.quant.RUNTIME,
                "base_url": api.base_url,
                "model_name": api.model_name,
            },
            train_facts=None,
            keys={"dataset": data_dir.name, "record": key},
            machine=None,
            lineage=[link("dataset", data_dir.name, data_dir)],
        )
