"""Unquantized checkpoints on transformers: fp32 (the CPU baseline), fp16 (the GPU
baseline) and bf16, saved once in that dtype from the merged fp32 checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness.formats import BuildInputs, Format, register

log = logging.getLogger(__name__)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@register
@dataclass
class FloatQuant(Format):
    FORMATS = tuple(DTYPES)
    PACKAGES = ("transformers", "torch")

    def widths(self) -> dict[int, str]:
        return {32 if self.format == "fp32" else 16: DTYPES[self.format]}

    @property
    def name(self) -> str:
        return self.format

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, DTYPES[self.format]))
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.transformers import TransformersRuntime

        if self.format == "fp16" and hardware.device == "cpu":
            log.warning(
                "fp16 on a CPU runs, but slowly: CPUs have few fp16 matmul kernels "
                "(bf16 or fp32 are the fair baselines)"
            )

        def load(device: str):
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(artifact, dtype=getattr(torch, DTYPES[self.format]))
            return model.to(device)

        return TransformersRuntime(artifact, hardware, threads, load)
