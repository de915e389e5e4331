"""Every cached stage of a job, and what its key hashes, in order: the one place that says
what each cache entry depends on.

    dataset -> base -> adapter -> merged -> artifact [-> imatrix, inside a GGUF build] -> record
    dataset -> model_file -> record          (a model file measured as it is)
    dataset -> hosted record                 (a hosted model)
    bandwidth                                (one per machine, beside the records)

A stage's key is a hash of exactly the inputs listed here (the keys of the stages before it
among them), so changing any input, its order, or its spelling here is a new key: every
entry already cached under the old one is orphaned and rebuilt. Where each stage runs calls
its function here and builds through `Stage.cached`.
"""

from __future__ import annotations

from typing import Any

from harness.store import Stage


def dataset(spec: Any, languages: Any, content: dict) -> Stage:
    """The dataset's splits: its config, the languages chosen, what its files (or its
    generator's templates) hold."""
    return Stage("dataset", (spec, languages, content))


def base(*identity: Any) -> Stage:
    """The base checkpoint, identified as its source identifies its weights
    (`sources.BuiltSource.base_model_dir`)."""
    return Stage("base", identity)


def adapter(
    base_key: str,
    data_key: str,
    train: dict,
    system: str,
    device: str,
    numerics: dict[str, str],
    training_version: int,
) -> Stage:
    """The fine-tuned adapter, and the model merged with it."""
    return Stage("adapter", (base_key, data_key, train, system, device, numerics, training_version))


def merged(adapter_key: str) -> Stage:
    """The merged model, built with its adapter (in the adapter's entry)."""
    return Stage("merged", (adapter_key,))


def artifact(source_key: str, key_parts: list, tool_version: str) -> Stage:
    """A format's artifact, built from the checkpoint or artifact keyed `source_key`."""
    return Stage("artifact", (source_key, key_parts, tool_version))


def imatrix(f16_key: str, data_key: str, system: str, samples: int, tool_build: Any) -> Stage:
    """llama.cpp's importance matrix of a GGUF F16 file over training rows."""
    return Stage("imatrix", (f16_key, data_key, system, samples, tool_build))


def model_file(sha256: str, chat_template_from: str, runtime: str, runtime_version: str) -> Stage:
    """A user's model file (not cached: the file is its own entry), with the runtime that runs it."""
    return Stage("model_file", (sha256, chat_template_from, runtime, runtime_version))


def record(
    artifact_key: str,
    data_key: str,
    hardware: dict,
    measure: dict,
    threads: int,
    system: str,
    machine: dict,
    version: int,
) -> Stage:
    """A local measurement's record (`targets.record_stage` says which config it reads)."""
    return Stage("record", (artifact_key, data_key, hardware, measure, threads, system, machine, version), "records")


def hosted_record(api: dict, data_key: str, measure: dict, system: str, version: int) -> Stage:
    """A hosted model's record: what answers is the endpoint's machine, not this one, so no
    machine, hardware or threads."""
    return Stage("record", ("hosted", api, data_key, measure, system, version), "records")


def bandwidth(machine: dict, device: str, threads: int) -> Stage:
    """This machine's measured memory bandwidth."""
    return Stage("bandwidth", (machine, device, threads))
