"""A model file measured as it is: a GGUF on llama.cpp (`model.source=gguf`), or a checkpoint
directory on transformers as its `config.json` says to load it (`model.source=local`:
full precision, or already quantized with GPTQ, AWQ or bitsandbytes). Nothing is trained or
built; the artifact is the user's file, and the record says what it holds."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.formats import QuantConfig, parameter_count, register
from harness.store import file_digest

# A user's file is not ours to rebuild: the fix is to give another one.
USER_FILE_FIX = "check the file (a complete download, the right path) or pass another model.path"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@register
@dataclass
class AsIsQuant(QuantConfig):
    bits: int = 0

    FORMATS = ("as_is",)
    RUNTIME = "llama_cpp (GGUF) / transformers (checkpoint)"
    PACKAGES = ("llama_cpp_python", "transformers")
    AS_GIVEN = True

    def widths(self) -> dict[int, str]:
        return {0: "as the file holds it"}

    @property
    def name(self) -> str:
        return "as_is"

    # A GGUF is one file, a checkpoint a directory: `model.source` says which the user meant
    # (gguf, local), and the target checks the path is that before anything below runs.

    def verify(self, artifact: Path) -> None:
        if artifact.is_dir():
            check_checkpoint_dir(artifact)
        else:
            from harness.formats.gguf import check_gguf_file

            check_gguf_file(artifact, fix=USER_FILE_FIX)

    def open(self, artifact: Path, hardware, threads: int):
        if not artifact.is_dir():
            from harness.runtimes.llama_cpp import LlamaCppRuntime

            return LlamaCppRuntime(artifact, hardware, threads)
        from harness.runtimes.transformers import TransformersRuntime

        def load(device: str):
            from transformers import AutoModelForCausalLM

            # dtype "auto": the dtype the checkpoint was saved in; a quantization_config in
            # config.json picks the quantized layers, which are placed on load (bitsandbytes
            # and GPTQ models cannot be moved afterwards).
            return AutoModelForCausalLM.from_pretrained(artifact, dtype="auto", device_map=device)

        return TransformersRuntime(artifact, hardware, threads, load)


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
    import hashlib

    config = check_checkpoint_dir(path)
    weights = sorted(w for p in WEIGHT_PATTERNS for w in path.glob(p))
    files = sorted(p for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256("".join(f"{p.name}:{file_digest(p)}" for p in files).encode()).hexdigest()
    quant = config.get("quantization_config") or {}
    size = sum(w.stat().st_size for w in weights)
    facts = {
        "file": str(path.resolve()),
        "sha256": digest,
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
