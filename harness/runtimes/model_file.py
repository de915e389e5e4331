"""Opening a user's model file on its runtime, in the measuring process: a light module, as
that process should hold the runtime and little else (its RSS is the serving footprint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# model.source -> (the distribution that runs it, the extra that installs it: "" for the core)
RUNTIME_OF = {
    "gguf": ("llama_cpp_python", ""),
    "checkpoint": ("transformers", ""),
    "onnx": ("onnxruntime_genai", "onnx"),
    "openvino": ("openvino_genai", "openvino"),
}


@dataclass
class ModelFile:
    """A GGUF on llama.cpp, a checkpoint directory on transformers, an ONNX Runtime GenAI
    directory on onnxruntime-genai, or an OpenVINO directory on OpenVINO (an `Opener`), by its
    `model.source`."""

    source: str

    @property
    def runtime_package(self) -> str:
        return RUNTIME_OF[self.source][0]

    @property
    def extra(self) -> str:
        return RUNTIME_OF[self.source][1]

    def prepare_kernels(self, hardware) -> None:
        """A file's kernels are whatever its runtime loads with it."""

    def open(self, artifact: Path, hardware, threads: int):
        if self.source == "gguf":
            from harness.runtimes.llama_cpp import LlamaCppRuntime

            return LlamaCppRuntime(artifact, hardware, threads)
        if self.source == "onnx":
            from harness.runtimes.onnx_genai import OnnxGenAIRuntime

            return OnnxGenAIRuntime(artifact, hardware, threads)
        if self.source == "openvino":
            from harness.runtimes.openvino_genai import OpenVINORuntime

            return OpenVINORuntime(artifact, hardware, threads)
        from harness.runtimes.transformers import TransformersRuntime

        def load(device: str):
            from transformers import AutoModelForCausalLM

            # dtype "auto": the dtype the checkpoint was saved in; a quantization_config in
            # config.json picks the quantized layers, which are placed on load (bitsandbytes
            # and GPTQ models cannot be moved afterwards).
            return AutoModelForCausalLM.from_pretrained(artifact, dtype="auto", device_map=device)

        return TransformersRuntime(artifact, hardware, threads, load)
