"""A model file measured as it is, on the runtime its source names (`sources.FileSource`: a
GGUF on llama.cpp, a checkpoint directory on transformers, an ONNX Runtime GenAI or an
OpenVINO model directory on its GenAI runtime). Nothing is trained or built; the artifact is
the user's file, checked before any native code opens it, and the record says what it holds,
keyed by its digest."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from harness import stages
from harness.config import JobConfig
from harness.errors import ConfigError
from harness.extras import require
from harness.sources import FileSource, registry
from harness.targets import Prepared, link, local_machine, local_measurement, record_stage


class FileTarget:
    def __init__(self, job: JobConfig):
        assert job.model.path is not None
        self.job = job
        self.path = Path(job.model.path).expanduser()
        self.file = job.model.origin
        assert isinstance(self.file, FileSource)

    def preflight(self) -> None:
        from harness.hardware import check_device

        file = self.file
        require(f"model.source={file.NAME}", (file.RUNTIME,), file.EXTRA)
        if self.path.exists() and self.path.is_dir() != file.IS_DIRECTORY:
            raise ConfigError(
                f"model.path={self.path} is a {'directory' if self.path.is_dir() else 'file'}: {_takes(file)}"
            )
        try:
            file.check_file(self.path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.path: {exc}") from None
        file.check_setup(self.path, self.job.model)
        check_device(self.job.hardware.device)

    def _tokenizer(self) -> Any:
        """The tokenizer whose chat template renders the prompts: model.tokenizer if given,
        else the file's own (a GGUF's metadata, a checkpoint's tokenizer files)."""
        from transformers import AutoTokenizer

        if self.job.model.tokenizer:
            return AutoTokenizer.from_pretrained(self.job.model.tokenizer)
        return self.file.tokenizer(self.path)

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        job = self.job
        facts = self.file.facts(self.path)
        facts["chat_template_from"] = job.model.tokenizer or self.file.TEMPLATE_FROM
        # the rendered prompts are keyed by the record (its system prompt, the test split); the
        # file and the runtime that runs it, here
        runtime = self.file.RUNTIME
        key = stages.model_file(
            facts["sha256"], facts["chat_template_from"], runtime, importlib.metadata.version(runtime)
        ).key
        machine, bandwidth = local_machine(job)
        record = record_stage(key, data_dir.name, job, job.hardware.threads_used, system, machine)
        return Prepared(
            measurement=local_measurement(job, self.path, self.file, self._tokenizer, data_dir, system, labels),
            record=record,
            artifact_info={
                "format": self.file.FORMAT,
                "bits": None,
                **facts,
                "tool": "as given",
                "quantize_wall_s": None,
            },
            train_facts=None,
            keys={
                "dataset": data_dir.name,
                "artifact": key,
                "record": record.key,
            },
            machine=machine,
            bandwidth=bandwidth,
            lineage=[link("dataset", data_dir.name, data_dir), link("artifact", key, self.path)],
            packages=(runtime,),
        )


def _takes(file: FileSource) -> str:
    """What each file source takes, this one first: "model.source=gguf takes a .gguf file,
    model.source=checkpoint a checkpoint directory, ..."."""
    others = [cls() for cls in registry().values() if issubclass(cls, FileSource) and cls.NAME != file.NAME]
    return ", ".join(
        [f"model.source={file.NAME} takes {file.FILE_IS}", *(f"model.source={o.NAME} {o.FILE_IS}" for o in others)]
    )
