"""Unquantized checkpoints (fp32 / fp16 / bf16) on transformers, greedy with a KV cache."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import ConfigError, HardwareConfig, QuantConfig

log = logging.getLogger(__name__)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TransformersRuntime:
    name = "transformers"

    def __init__(self, model_dir: Path, quant: QuantConfig, hardware: HardwareConfig, threads: int):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if quant.format not in DTYPES:
            raise NotImplementedError(f"quant.format={quant.format} is not implemented yet on transformers")
        if hardware.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("hardware=cuda but torch sees no CUDA device; use hardware=cpu")
        if quant.format == "fp16" and hardware.device == "cpu":
            log.warning("fp16 on a CPU runs, but slowly: CPUs have few fp16 matmul kernels (bf16 or fp32 are the fair baselines)")
        torch.set_num_threads(threads)
        self.torch = torch
        self.version = transformers.__version__
        self.device = torch.device(hardware.device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, DTYPES[quant.format]))
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.past = None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _forward(self, ids: list[int]) -> int:
        with self.torch.inference_mode():
            out = self.model(
                input_ids=self.torch.tensor([ids], device=self.device),
                past_key_values=self.past,
                use_cache=True,
            )
        self.past = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def start(self, prompt_ids: list[int]) -> int:
        self.past = None
        return self._forward(prompt_ids)

    def step(self, token: int) -> int:
        return self._forward([token])
