"""bitsandbytes: NF4 (4-bit) and LLM.int8 (8-bit) weights on transformers, CPU or CUDA.

The same NF4 recipe serves QLoRA's frozen base and the `bnb_nf4` artifact. The artifact is
the quantized model serialized by transformers (its config carries the quantization), so its
size on disk is real and loading it needs no re-quantization.
"""

from __future__ import annotations

from pathlib import Path


def bnb_config(bits: int, device: str):
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(device),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def compute_dtype(device: str):
    import torch

    # bf16 matmuls on a GPU; fp32 on a CPU, where few kernels take bf16.
    return torch.bfloat16 if device == "cuda" else torch.float32


def quantize(model_dir: Path, bits: int, device: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=bnb_config(bits, device), dtype=compute_dtype(device), device_map=device
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
