"""bitsandbytes: NF4 (4-bit) and LLM.int8 (8-bit) weights on transformers, CPU or CUDA.

The same NF4 recipe serves QLoRA's frozen base and the `bnb_nf4` artifact. The artifact is
the quantized model serialized by transformers (its config carries the quantization), so its
size on disk is real and loading it needs no re-quantization.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from harness.formats import BuildInputs, Format, register

KINDS = {4: "nf4", 8: "int8"}


def bnb_config(bits: int, device: str):
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(device),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def compute_dtype(device: str):
    """16-bit matmuls on a GPU, in the half precision it computes natively (bf16 from Ampere on,
    fp16 on a T4 and older); fp32 on a CPU, where few kernels take either."""
    import torch

    from harness.hardware import gpu_half_dtype

    return gpu_half_dtype() if device == "cuda" else torch.float32


@register
@dataclass
class BnbQuant(Format):
    FORMATS = ("bnb",)
    PACKAGES = ("bitsandbytes", "transformers")
    EXTRA = "bnb"

    def widths(self) -> dict[int, str]:
        return dict(KINDS)

    @property
    def name(self) -> str:
        return f"bnb_{KINDS[self.bits]}"

    def key_parts(self, inputs: BuildInputs) -> list:
        # quantized on the device it will run on: bitsandbytes' layouts are per backend
        return [self.format, self.bits, inputs.device]

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            source,
            quantization_config=bnb_config(self.bits, inputs.device),
            dtype=compute_dtype(inputs.device),
            device_map=inputs.device,
        )
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.transformers import TransformersRuntime

        def load(device: str):
            from transformers import AutoModelForCausalLM

            # LLM.int8 casts each activation to fp16, and says so on every forward pass.
            warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
            # quantized weights cannot be moved after loading: place them where they run
            return AutoModelForCausalLM.from_pretrained(artifact, dtype=compute_dtype(device), device_map=device)

        return TransformersRuntime(artifact, hardware, threads, load)
