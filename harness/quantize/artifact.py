"""The artifact stage: the merged model in the configured format, cached under a key of
(merged model key, format options, tool version)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness.config import QuantConfig
from harness.quantize import bnb, gguf, gptq
from harness.store import cache_key, cached_dir, dir_size_mib, read_json, write_json_atomic

ARTIFACT_INFO = "artifact.json"


@dataclass
class Artifact:
    path: Path  # a checkpoint directory, or a single GGUF file
    key: str
    info: dict


def check_supported(quant: QuantConfig, llama_cpp_dir: Optional[str]) -> None:
    """What can be checked before any heavy work: the format is implemented and its tools exist."""
    if quant.format == "gguf":
        gguf.check_converter(llama_cpp_dir)
        gguf.file_type_id(quant.gguf_type)


def parameter_count(model_dir: Path) -> int:
    """Parameters of a safetensors checkpoint, read from its headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                total += n
    return total


def _save_cast(model_dir: Path, dtype_name: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype_name))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def _timed(build):
    def wrapped(out: Path) -> None:
        t0 = time.perf_counter()
        build(out)
        write_json_atomic(out / ARTIFACT_INFO, {"quantize_wall_s": time.perf_counter() - t0})

    return wrapped


def build_artifact(
    model_dir: Path, model_key: str, quant: QuantConfig, cache_root: Path, threads: int, llama_cpp_dir: Optional[str],
    device: str, data_dir: Optional[Path] = None, system: str = "",
) -> Artifact:
    """`data_dir` and `system` are for formats that calibrate on the training split (GPTQ)."""
    n_params = parameter_count(model_dir)
    if quant.format == "gguf":
        import llama_cpp

        tool, version = "llama.cpp (llama-cpp-python)", llama_cpp.__version__
        f16_key = cache_key("gguf-f16", model_key, version)
        f16_dir = cached_dir(
            cache_root, "artifact", f16_key,
            _timed(lambda out: gguf.convert_f16(model_dir, out / "model-F16.gguf", llama_cpp_dir)),
        )
        if quant.gguf_type == "F16":
            key, directory, name = f16_key, f16_dir, "model-F16.gguf"
        else:
            key = cache_key("gguf", f16_key, quant.gguf_type, version)
            name = f"model-{quant.gguf_type}.gguf"
            directory = cached_dir(
                cache_root, "artifact", key,
                _timed(lambda out: gguf.quantize(f16_dir / "model-F16.gguf", out / name, quant.gguf_type, threads)),
            )
        path = directory / name
    elif quant.format == "bnb":
        import bitsandbytes

        tool, version = "bitsandbytes", bitsandbytes.__version__
        # Quantized on the device it will run on: bitsandbytes' layouts are per backend.
        key = cache_key("bnb", model_key, quant.bits, device, version)
        directory = cached_dir(cache_root, "artifact", key, _timed(lambda out: bnb.quantize(model_dir, quant.bits, device, out)))
        path = directory
    elif quant.format == "gptq":
        from transformers import AutoTokenizer

        if data_dir is None:
            raise ValueError("GPTQ calibrates on the training split: pass data_dir")
        tool, version = "gptqmodel", gptq.version()
        # The calibration texts follow from the model (its chat template), the dataset, the
        # system prompt and their number: the key names those, and only a build renders them.
        calibration = (data_dir.name, system, quant.calibration_samples)
        options = (quant.bits, quant.group_size, quant.desc_act)
        key = cache_key("gptq", model_key, options, calibration, device, version)

        def build(out: Path) -> None:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            texts = gptq.calibration_texts(tokenizer, data_dir, system, quant.calibration_samples)
            gptq.quantize(model_dir, quant, texts, device, out)

        directory = cached_dir(cache_root, "artifact", key, _timed(build))
        path = directory
    else:
        import transformers

        from harness.runtimes.transformers import DTYPES

        tool, version = "transformers", transformers.__version__
        key = cache_key("checkpoint", model_key, quant.format, version)
        directory = cached_dir(cache_root, "artifact", key, _timed(lambda out: _save_cast(model_dir, DTYPES[quant.format], out)))
        path = directory
    size_mib = dir_size_mib(path) if path.is_file() else sum(dir_size_mib(p) for p in path.glob("*.safetensors"))
    info = {
        "format": quant.format,
        "bits": quant.bits,
        "gguf_type": quant.gguf_type,
        "size_mib": size_mib,
        "bits_per_weight": size_mib * 2**20 * 8 / n_params,
        "n_params": n_params,
        "tool": tool,
        "tool_version": version,
        **read_json(directory / ARTIFACT_INFO),
    }
    return Artifact(path, key, info)
