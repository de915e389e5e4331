"""ONNX Runtime GenAI: int4 and int8 weight-only quantization by its model builder
(`python -m onnxruntime_genai.models.builder`, CPU execution provider), run on
onnxruntime-genai. The builder reads the merged checkpoint with torch and transformers and
writes a directory ONNX Runtime GenAI opens as it is: `genai_config.json`, `model.onnx` with
its external data, and the tokenizer.

Its int4 quantizes every MatMul, the output layer (lm_head) included, in blocks of
`block_size` (MatMulNBits), and a tied embedding with it (read from the quantized output
layer); its int8 leaves the embedding in float. What it did is read back from the built
graph into the record (`quantized`), not assumed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, choices
from harness.formats import BUILT_FACTS, BuildInputs, Format, register

# The builder's own choices for its weight-only (MatMulNBits) quantization options.
BLOCK_SIZES = (16, 32, 64, 128, 256)
# 1 fp32, 2 fp16, 3 bf16, 4 int8: the minimum precision of the activations the MatMul runs in.
ACCURACY_LEVELS = (1, 2, 3, 4)
ALGORITHMS = ("default", "rtn", "k_quant")
CONFIG = "genai_config.json"
# What the measuring process reads, as `genai_config.json` names them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@register
@dataclass
class OrtQuant(Format):
    # MatMulNBits block size (the builder's default: 32); the model's hidden and intermediate
    # sizes must be multiples of it.
    block_size: int = 32
    # Minimum precision of the quantized MatMul's activations; 4 (int8) is the builder's CPU default.
    accuracy_level: int = 4
    # Signed int4/int8 with no zero point (the builder's default), else unsigned with zero points.
    is_symmetric: bool = True
    # The builder's base method: "default" (round to nearest, every MatMul), "rtn", "k_quant".
    algo_config: str = "default"

    FORMATS = ("ort",)
    PACKAGES = ("onnxruntime_genai", "onnx", "onnx_ir")
    EXTRA = "onnx"

    def widths(self) -> dict[int, str]:
        return {4: "int4 weights (MatMulNBits)", 8: "int8 weights (MatMulNBits)"}

    def validate(self) -> None:
        if self.block_size not in BLOCK_SIZES:
            raise ConfigError(f"quant.block_size={self.block_size}: the builder takes one of {choices(BLOCK_SIZES)}")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ConfigError(
                f"quant.accuracy_level={self.accuracy_level}: choose one of {choices(ACCURACY_LEVELS)} "
                "(1 fp32, 2 fp16, 3 bf16, 4 int8 activations)"
            )
        if self.algo_config not in ALGORITHMS:
            raise ConfigError(f"quant.algo_config={self.algo_config!r}: choose one of {choices(ALGORITHMS)}")

    @property
    def name(self) -> str:
        # ort_int4 for the builder's defaults; each option set otherwise named after it
        options = {"b": self.block_size, "a": self.accuracy_level, "sym": self.is_symmetric, "": self.algo_config}
        changed = [f"{k}{v}" for (k, v), default in zip(options.items(), (32, 4, True, "default")) if v != default]
        return "_".join([f"ort_int{self.bits}", *changed]).replace("symFalse", "asym")

    def describe(self) -> dict:
        return {
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "is_symmetric": self.is_symmetric,
            "algo_config": self.algo_config,
            "execution_provider": "cpu",
        }

    def key_parts(self, inputs: BuildInputs) -> list:
        return [self.format, self.bits, self.block_size, self.accuracy_level, self.is_symmetric, self.algo_config]

    def tool(self) -> tuple[str, str]:
        import importlib.metadata

        return "onnxruntime-genai model builder", importlib.metadata.version("onnxruntime_genai")

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        from harness.formats.gguf import run_tool

        model_dir = self.artifact_path(out)
        options = {
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "is_symmetric": str(self.is_symmetric).lower(),
            "algo_config": self.algo_config,
            # the checkpoint is on disk: never ask the hub
            "hf_token": "false",
        }
        run_tool(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "--input",
                str(source),
                "--output",
                str(model_dir),
                "--precision",
                f"int{self.bits}",
                "--execution_provider",
                "cpu",
                "--cache_dir",
                str(out / "builder_cache"),
                "--extra_options",
                *(f"{k}={v}" for k, v in options.items()),
            ],
            "onnxruntime_genai.models.builder",
        )
        (out / BUILT_FACTS).write_text(json.dumps(weight_summary(model_dir)))

    def artifact_path(self, directory: Path) -> Path:
        return directory / "model"

    def weight_files(self, artifact: Path) -> list[Path]:
        return onnx_files(artifact)

    def verify(self, artifact: Path) -> None:
        check_onnx_dir(artifact)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.onnx_genai import OnnxGenAIRuntime

        return OnnxGenAIRuntime(artifact, hardware, threads)


def onnx_files(model_dir: Path) -> list[Path]:
    """The model's graph files and their external data: its weights on disk."""
    return sorted(p for p in model_dir.iterdir() if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".data")))


def _decoder_file(model_dir: Path, fix: str) -> Path:
    """The decoder's ONNX file as `genai_config.json` names it; a clear error for a directory
    that is not an ONNX Runtime GenAI model."""
    config = model_dir / CONFIG
    if not config.is_file():
        raise ValueError(f"{model_dir} is not an ONNX Runtime GenAI model directory (no {CONFIG}); {fix}")
    try:
        filename = json.loads(config.read_text())["model"]["decoder"]["filename"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{config} is malformed ({type(exc).__name__}: {exc}); {fix}") from None
    return model_dir / filename


def check_onnx_dir(model_dir: Path, fix: str = "delete it so the harness rebuilds it") -> None:
    """A clear error for a directory ONNX Runtime GenAI would fail to open, or open damaged:
    no or a malformed `genai_config.json`, no tokenizer, a missing or truncated ONNX graph, an
    external data file missing or shorter than the tensors the graph places in it."""
    import onnx
    from google.protobuf.message import DecodeError

    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such ONNX Runtime GenAI model directory")
    graph_file = _decoder_file(model_dir, fix)
    missing = [name for name in TOKENIZER_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir} has no tokenizer ({choices(missing)} missing); {fix}")
    if not graph_file.is_file():
        raise ValueError(f"{model_dir}: {graph_file.name}, the decoder {CONFIG} names, is missing; {fix}")
    try:
        graph = onnx.load(str(graph_file), load_external_data=False).graph
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{graph_file} is a damaged ONNX file ({exc}); {fix}") from None
    if not graph.node:
        raise ValueError(f"{graph_file} is an ONNX file without nodes (a truncated graph); {fix}")
    for tensor in graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        place = {e.key: e.value for e in tensor.external_data}
        data = model_dir / place["location"]
        if not data.is_file():
            raise ValueError(
                f"{model_dir}: {place['location']}, the external data of {graph_file.name}, is missing; {fix}"
            )
        end = int(place.get("offset", 0)) + int(place.get("length", 0))
        if end > data.stat().st_size:
            raise ValueError(f"{data} is truncated (tensor {tensor.name} runs past the end of the file); {fix}")


def weight_summary(model_dir: Path) -> dict[str, Any]:
    """What the builder quantized, read from the graph: the type of each weight-carrying op's
    weight (MatMulNBits' bits, a float MatMul's or embedding Gather's initializer dtype), the
    output layer's and the embedding's in particular."""
    import onnx

    graph = onnx.load(str(_decoder_file(model_dir, "")), load_external_data=False).graph
    dtypes = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer}

    def weight_type(node) -> str | None:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            return f"int{next((a.i for a in node.attribute if a.name == 'bits'), 4)}"
        return next((dtypes[i] for i in node.input if i in dtypes), None)

    matmuls = {n.name: weight_type(n) for n in graph.node if n.op_type in ("MatMul", "MatMulNBits")}
    gathers = {n.name: weight_type(n) for n in graph.node if n.op_type in ("Gather", "GatherBlockQuantized")}
    return {
        "matmuls": dict(Counter(t for t in matmuls.values() if t)),
        "output_layer": next((t for n, t in matmuls.items() if "lm_head" in n), None),
        # a tied embedding the int4 build shares with the output layer is a GatherBlockQuantized
        "embedding": next((t for n, t in gathers.items() if "embed_tokens" in n), None),
    }
