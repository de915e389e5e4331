"""A model file measured as it is: a GGUF on llama.cpp (`model.source=gguf`), a checkpoint
directory on transformers as its `config.json` says to load it (`model.source=checkpoint`:
full precision, or already quantized with GPTQ or bitsandbytes), an ONNX Runtime
GenAI model directory on onnxruntime-genai (`model.source=onnx`), or an OpenVINO model
directory on OpenVINO (`model.source=openvino`). Nothing is trained or
built; the artifact is the user's file, checked before any native code opens it, and the
record says what it holds, keyed by its digest."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.config import JobConfig
from harness.errors import ConfigError
from harness.extras import require
from harness.formats import parameter_count
from harness.models import FILE_IS
from harness.runtimes.model_file import ModelFile
from harness.store import cache_key, file_digest
from harness.targets import Prepared, link, local_machine, local_measurement, record_key

# A user's file is not ours to rebuild: the fix is to give another one.
USER_FILE_FIX = "check the file (a complete download, the right path) or pass another model.path"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class FileTarget:
    def __init__(self, job: JobConfig):
        assert job.model.path is not None
        self.job = job
        self.path = Path(job.model.path).expanduser()
        self.file = ModelFile(job.model.source)

    def preflight(self) -> None:
        from harness.hardware import check_device

        source, is_gguf = self.job.model.source, self.job.model.source == "gguf"
        require(f"model.source={source}", (self.file.runtime_package,), self.file.extra)
        if self.path.exists() and self.path.is_dir() == is_gguf:
            # "model.source=gguf takes a .gguf file, model.source=checkpoint a checkpoint directory, ..."
            kinds = ", ".join(f"model.source={s} {what}" for s, what in FILE_IS.items()).replace(" ", " takes ", 1)
            raise ConfigError(f"model.path={self.path} is a {'directory' if self.path.is_dir() else 'file'}: {kinds}")
        try:
            check_file(source, self.path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.path: {exc}") from None
        if source == "checkpoint":  # an ONNX or OpenVINO directory holds no checkpoint weights
            check_quant_backend(self.path, check_checkpoint_dir(self.path))
        if is_gguf and not self.job.model.tokenizer:
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
        if self.job.model.source == "gguf":
            return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        return AutoTokenizer.from_pretrained(self.path)

    def prepare(self, data_dir: Path, system: str, labels: list[str]) -> Prepared:
        job, source = self.job, self.job.model.source
        facts = {"gguf": gguf_facts, "checkpoint": checkpoint_facts, "onnx": onnx_facts, "openvino": openvino_facts}[
            source
        ](self.path)
        facts["chat_template_from"] = job.model.tokenizer or {"gguf": "gguf metadata", "checkpoint": "checkpoint"}.get(
            source, "model directory"
        )
        # the rendered prompts are keyed by the record (its system prompt, the test split); the
        # file and the runtime that runs it, here
        runtime = self.file.runtime_package
        key = cache_key(
            "model_file", facts["sha256"], facts["chat_template_from"], runtime, importlib.metadata.version(runtime)
        )
        machine, bandwidth = local_machine(job)
        return Prepared(
            measurement=local_measurement(job, self.path, self.file, self._tokenizer, data_dir, system, labels),
            artifact_info={
                "format": source,
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
            bandwidth=bandwidth,
            lineage=[link("dataset", data_dir.name, data_dir), link("artifact", key, self.path)],
            packages=(runtime,),
        )


def check_file(source: str, path: Path) -> None:
    """The checks of a model file of `source`, before any native code opens it."""
    if source == "gguf":
        from harness.formats.gguf import check_gguf_file

        check_gguf_file(path, fix=USER_FILE_FIX)
    elif source == "onnx":
        from harness.formats.ort import check_onnx_dir

        check_onnx_dir(path, fix=USER_FILE_FIX)
    elif source == "openvino":
        from harness.formats.openvino import check_openvino_dir

        check_openvino_dir(path, fix=USER_FILE_FIX)
    else:
        check_checkpoint_dir(path)


def check_checkpoint_dir(path: Path) -> dict[str, Any]:
    """A clear error for a directory that is not a loadable checkpoint; its config otherwise."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory (model.path)")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} is not a Hugging Face checkpoint (no config.json); {USER_FILE_FIX}")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise ValueError(
            f"{path} has a config.json but no weights (*.safetensors or pytorch_model*.bin); {USER_FILE_FIX}"
        )
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config} is not valid JSON ({exc}); {USER_FILE_FIX}") from None


# A checkpoint's quantization_config.quant_method -> the format here whose packages load its layers.
QUANT_METHOD_FORMATS = {"gptq": "gptq", "bitsandbytes": "bnb"}


def check_quant_backend(path: Path, config: dict[str, Any]) -> None:
    """A quantized checkpoint whose backend is not installed is refused here, not when
    transformers fails to load it after the dataset is built."""
    from harness.formats import registry

    method = (config.get("quantization_config") or {}).get("quant_method")
    if method in QUANT_METHOD_FORMATS:
        fmt = registry()[QUANT_METHOD_FORMATS[method]]
        require(f"model.path={path} (a {method}-quantized checkpoint)", fmt.PACKAGES, fmt.EXTRA)


def gguf_facts(path: Path) -> dict[str, Any]:
    """What a GGUF holds, from its header: architecture, llama.cpp file type, the share of
    parameters in each tensor type, parameter count, and whether it carries a chat template."""
    from harness.gguf_header import read_header

    header = read_header(path)
    by_type: Counter[str] = Counter()
    for tensor in header.tensors:
        by_type[tensor.type_name] += tensor.n_elements
    n_params = sum(by_type.values())
    size = path.stat().st_size
    return {
        "file": str(path.resolve()),
        "sha256": file_digest(path),
        "size_mib": size / 2**20,
        "architecture": header.values.get("general.architecture"),
        "gguf_type": header.file_type,
        "tensor_types": {k: round(v / n_params, 4) for k, v in by_type.most_common()},
        "n_params": n_params,
        "bits_per_weight": size * 8 / n_params,
        "chat_template_in_file": "tokenizer.chat_template" in header.keys,
    }


def checkpoint_facts(path: Path) -> dict[str, Any]:
    """What a checkpoint directory holds: its architecture, how its weights are quantized (if
    they are), their size, and one digest over every file in it (weights, config, tokenizer
    and its chat template: a change to any is another model to measure)."""
    config = check_checkpoint_dir(path)
    weights = sorted(w for p in WEIGHT_PATTERNS for w in path.glob(p))
    quant = config.get("quantization_config") or {}
    size = sum(w.stat().st_size for w in weights)
    facts = {
        "file": str(path.resolve()),
        "sha256": dir_digest(path),
        "size_mib": size / 2**20,
        "architecture": (config.get("architectures") or [None])[0],
        "quant_method": quant.get("quant_method"),
        "quant_bits": quant.get("bits")
        or (4 if quant.get("load_in_4bit") else 8 if quant.get("load_in_8bit") else None),
        "dtype": config.get("torch_dtype") or config.get("dtype"),
    }
    if not quant:  # packed quantized tensors do not count parameters
        n_params = parameter_count(path)
        facts.update(n_params=n_params, bits_per_weight=size * 8 / n_params if n_params else None)
    return facts


def dir_digest(path: Path) -> str:
    """One digest over every file in a model directory (weights, config, tokenizer and its chat
    template: a change to any is another model to measure)."""
    files = sorted(p for p in path.iterdir() if p.is_file())
    return hashlib.sha256("".join(f"{p.name}:{file_digest(p)}" for p in files).encode()).hexdigest()


def onnx_facts(path: Path) -> dict[str, Any]:
    """What an ONNX Runtime GenAI directory holds: its architecture as `genai_config.json`
    names it, what its graph quantized (the output layer's and the embedding's weight types
    among them), the size of its graph and weights, one digest over its files."""
    from harness.formats.ort import CONFIG, onnx_files, weight_summary

    check_file("onnx", path)
    genai = json.loads((path / CONFIG).read_text())["model"]
    return {
        "file": str(path.resolve()),
        "sha256": dir_digest(path),
        "size_mib": sum(p.stat().st_size for p in onnx_files(path)) / 2**20,
        "architecture": genai.get("type"),
        "quantized": weight_summary(path),
    }


def openvino_facts(path: Path) -> dict[str, Any]:
    """What an OpenVINO model directory holds: its architecture as its `config.json` names it,
    what its IR compressed (the output layer's and the embedding's weight types among them),
    the size of its IR, one digest over its files."""
    from harness.formats.openvino import ir_files, weight_summary

    check_file("openvino", path)
    config = path / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") if config.is_file() else None
    return {
        "file": str(path.resolve()),
        "sha256": dir_digest(path),
        "size_mib": sum(p.stat().st_size for p in ir_files(path)) / 2**20,
        "architecture": (architectures or [None])[0],
        "quantized": weight_summary(path),
    }
