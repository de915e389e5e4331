"""The model group's schema (`model.*`); where the model comes from, and what is done with it,
is its source's (`harness.sources`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from harness.errors import ConfigError
from harness.runtimes.config import ApiConfig
from harness.sources import ENDPOINT, Source, registry


@dataclass
class ModelConfig:
    """The model. Built here (fine-tuned and quantized by the job's `train` and `quant`):
    `source=embedded`, a GGUF shipped inside a Python package; `source=hf`, a Hugging Face id
    (needs network or a warm HF cache); `source=local`, a Hugging Face checkpoint directory on
    disk. Measured as it is, with no `train` or `quant`: `source=gguf`, a GGUF file on disk;
    `source=checkpoint`, a checkpoint directory (full precision, or already quantized with
    GPTQ or bitsandbytes); `source=onnx`, an ONNX Runtime GenAI model directory;
    `source=openvino`, an OpenVINO model directory (its IR and tokenizer IRs). Measured
    as served: `source=api`, an OpenAI-compatible endpoint (`model.api`)."""

    name: str = MISSING
    source: str = "embedded"
    hf_id: Optional[str] = None
    revision: str = "main"
    package: Optional[str] = None
    gguf_file: Optional[str] = None
    path: Optional[str] = None
    # source=gguf, checkpoint, onnx or openvino: a tokenizer (directory or hub id) whose chat template renders
    # the prompts; None: the file's own (a GGUF's metadata, a checkpoint's tokenizer files).
    tokenizer: Optional[str] = None
    # Name the labels in the system prompt. None: only for a model not fine-tuned here
    # (train=none); set false for a file fine-tuned on this task (e.g. one this harness built).
    list_labels: Optional[bool] = None
    # A short system prompt; the chat template's own default can be longer than the query.
    system_prompt: str = "Classify the e-commerce query. Answer with JSON."
    # source=api: the endpoint that serves the model. A node on every preset, its URL and model
    # name unset, so `model.source=api model.api.base_url=URL model.api.model_name=M` works on
    # any of them; `config.to_job_config` drops it for a model that is not hosted.
    api: Optional[ApiConfig] = field(default_factory=ApiConfig)

    def __post_init__(self) -> None:
        sources = registry()
        if self.source not in sources:
            raise ConfigError(f"model.source={self.source!r} is unknown; choose one of: {', '.join(sources)}")
        unset = self.origin.unset_need(self)
        if unset:
            raise ConfigError(f"model={self.name}: source={self.source} needs {unset}")
        if self.kind == ENDPOINT:
            self.origin.check_api(self.api and dataclasses.asdict(self.api))
        else:
            self.api = None  # only a hosted model has an endpoint

    @property
    def origin(self) -> Source:
        """Where the model comes from: its source, which says what is done with it."""
        return registry()[self.source]()

    @property
    def kind(self) -> str:
        return self.origin.KIND
