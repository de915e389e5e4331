"""Checkpoints on transformers, greedy with a KV cache: unquantized (fp32 / fp16 / bf16),
bitsandbytes-quantized (their config carries the quantization) and GPTQ (loaded by
gptqmodel, which returns a transformers model with its quantized linear layers)."""

from __future__ import annotations

import logging
import warnings
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

        from harness.quantize.bnb import compute_dtype

        if quant.format not in DTYPES and quant.format not in ("bnb", "gptq"):
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
        if quant.format == "gptq":
            from harness.quantize import gptq

            self.model = gptq.load(model_dir, hardware.device)
        elif quant.format == "bnb":
            # LLM.int8 casts each activation to fp16, and says so on every forward pass.
            warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
            # quantized weights cannot be moved after loading: place them where they run
            self.model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=compute_dtype(hardware.device), device_map=hardware.device
            )
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, DTYPES[quant.format]))
            self.model.to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.past = None
        self.model_mib = self.model.get_memory_footprint() / 2**20
        # The quantized linear layer the library chose (its kernel), if any.
        self.kernel = next(
            (type(m).__name__ for m in self.model.modules() if type(m).__module__.startswith(("gptqmodel", "bitsandbytes"))),
            None,
        )

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _forward(self, rows: list[list[int]]) -> list[int]:
        with self.torch.inference_mode():
            out = self.model(
                input_ids=self.torch.tensor(rows, device=self.device),
                past_key_values=self.past,
                use_cache=True,
            )
        self.past = out.past_key_values
        return out.logits[:, -1].argmax(dim=-1).tolist()

    def start(self, prompt_ids: list[int]) -> int:
        return self.start_batch([prompt_ids])[0]

    def step(self, token: int) -> int:
        return self.step_batch([token])[0]

    def start_batch(self, prompt_ids: list[list[int]]) -> list[int]:
        self.past = None
        return self._forward(prompt_ids)

    def step_batch(self, tokens: list[int]) -> list[int]:
        return self._forward([[t] for t in tokens])

    def generate_batch(self, prompt_ids: list[list[int]], max_new_tokens: int, stop: str) -> list[list[int]]:
        """Greedy answers to prompts of any lengths at once, through `generate` (left padding,
        so every row's answer starts at the same step); each row stops at end of turn or once
        its text holds `stop`."""
        torch = self.torch
        width = max(len(ids) for ids in prompt_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompt_ids):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                max_new_tokens=max_new_tokens, eos_token_id=sorted(self.eos_ids), pad_token_id=pad,
                stop_strings=[stop], tokenizer=self.tokenizer,
                # greedy: the checkpoint's sampling defaults (temperature, top_p) do not apply
                temperature=None, top_p=None, top_k=None,
            )
        return [[t for t in row if t != pad and t not in self.eos_ids] for row in out[:, width:].tolist()]
