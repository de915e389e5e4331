"""`model.source=checkpoint`: a checkpoint directory (`model.path`) measured as it is on
transformers, loaded as its `config.json` says: full precision, or already quantized with
GPTQ or bitsandbytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.extras import require
from harness.sources import USER_FILE_FIX, FileSource, dir_digest, register

if TYPE_CHECKING:
    from harness.models import ModelConfig

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# A checkpoint's quantization_config.quant_method -> the format here whose packages load its layers.
QUANT_METHOD_FORMATS = {"gptq": "gptq", "bitsandbytes": "bnb"}


@register
class CheckpointDirectory(FileSource):
    NAME = FORMAT = "checkpoint"
    FILE_IS = "a checkpoint directory"
    RUNTIME = "transformers"
    TEMPLATE_FROM = "checkpoint"

    def check_file(self, path: Path) -> None:
        check_checkpoint_dir(path)

    def check_setup(self, path: Path, model: "ModelConfig") -> None:
        """A quantized checkpoint whose backend is not installed is refused here, not when
        transformers fails to load it after the dataset is built."""
        from harness.formats import registry

        method = (check_checkpoint_dir(path).get("quantization_config") or {}).get("quant_method")
        if method in QUANT_METHOD_FORMATS:
            fmt = registry()[QUANT_METHOD_FORMATS[method]]
            require(f"model.path={path} (a {method}-quantized checkpoint)", fmt.PACKAGES, fmt.EXTRA)

    def facts(self, path: Path) -> dict[str, Any]:
        """What a checkpoint directory holds: its architecture, how its weights are quantized
        (if they are), their size, and one digest over every file in it (weights, config,
        tokenizer and its chat template: a change to any is another model to measure)."""
        from harness.formats import parameter_count

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

    def open(self, artifact: Path, hardware, threads: int):
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
