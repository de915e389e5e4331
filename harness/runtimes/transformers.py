"""Checkpoints on transformers, greedy with a KV cache. Each format loads its own model
(a dtype, a bitsandbytes config, gptqmodel's quantized layers); this runtime drives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from harness.errors import ConfigError
from harness.hardware import HardwareConfig
from harness.prompt import reusable_prefix
from harness.runtimes.constrain import AnswerTrie, pick


class TransformersRuntime:
    name = "transformers"
    # A format that picks its kernel says how (GPTQ on a GPU); the others leave it to the library.
    kernel_choice: Optional[dict] = None

    def __init__(self, model_dir: Path, hardware: HardwareConfig, threads: int, load: Callable[[str], Any]):
        """`load(device)` returns the format's model placed on that device."""
        import torch
        import transformers
        from transformers import AutoTokenizer

        if hardware.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("hardware=cuda but torch sees no CUDA device; use hardware=cpu")
        torch.set_num_threads(threads)
        self.torch = torch
        self.version = transformers.__version__
        self.device = torch.device(hardware.device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = load(hardware.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.past = None
        self.devices = ["cpu"] + [
            f"cuda:{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ]
        self.model_mib = self.model.get_memory_footprint() / 2**20
        # The quantized linear layer the library chose (its kernel), if any.
        self.kernel = next(
            (
                type(m).__name__
                for m in self.model.modules()
                if type(m).__module__.startswith(("gptqmodel", "bitsandbytes"))
            ),
            None,
        )

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _forward(self, rows: list[list[int]], allowed: Optional[frozenset[int]] = None) -> list[int]:
        with self.torch.inference_mode():
            out = self.model(
                input_ids=self.torch.tensor(rows, device=self.device),
                past_key_values=self.past,
                use_cache=True,
            )
        self.past = out.past_key_values
        if allowed is None:  # one argmax and one device sync for the whole batch (the speed test's path)
            return out.logits[:, -1].argmax(dim=-1).tolist()
        return [pick(row, allowed) for row in out.logits[:, -1]]

    def start(self, prompt_ids: list[int], allowed: Optional[frozenset[int]] = None) -> int:
        self.past = None
        return self._forward([prompt_ids], allowed)[0]

    def step(self, token: int, allowed: Optional[frozenset[int]] = None) -> int:
        return self._forward([[token]], allowed)[0]

    def start_batch(self, prompt_ids: list[list[int]]) -> list[int]:
        self.past = None
        return self._forward(prompt_ids)

    def step_batch(self, tokens: list[int]) -> list[int]:
        return self._forward([[t] for t in tokens])

    def generate_batch(
        self, prompt_ids: list[list[int]], max_new_tokens: int, stop: str, trie: Optional[AnswerTrie] = None
    ) -> list[list[int]]:
        """Greedy answers to prompts of any lengths at once, through `generate` (each row's
        remainder after the prompts' shared prefix padded on its left, so every row's answer
        starts at the same step); each row stops at end of turn or once its text holds `stop`.
        The shared prefix (system prompt, chat markup) runs once and its keys and values are
        repeated across the rows: right for an accuracy pass, never used for the latency or
        speed figures. A trie restricts answers through `prefix_allowed_tokens_fn`,
        transformers' own hook for constrained decoding."""
        torch = self.torch
        shared = reusable_prefix(prompt_ids)
        width = max(len(ids) for ids in prompt_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        if shared:
            ids[:, :shared] = torch.tensor(prompt_ids[0][:shared])
            mask[:, :shared] = 1
        for row, prompt in enumerate(prompt_ids):
            ids[row, width - len(prompt) + shared :] = torch.tensor(prompt[shared:])
            mask[row, width - len(prompt) + shared :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cached = {}
        constrain = {}
        if trie is not None:

            def allowed_tokens(_, row):
                # a finished row (past its answer) is padded whatever this allows
                return sorted(trie.allowed(row[width:].tolist()) or trie.end_ids)

            constrain = {"prefix_allowed_tokens_fn": allowed_tokens}
        with torch.inference_mode():
            if shared:
                # the padding sits between prefix and query; generate's position ids count
                # only unmasked tokens, so each row's positions are those of its prompt alone.
                # (A checkpoint whose generation_config names a cache_implementation would make
                # generate refuse a passed cache; SmolLM2's and Llama 3.2's name none.)
                cache = self.model(input_ids=ids[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values
                cache.batch_repeat_interleave(len(prompt_ids))
                cached = {"past_key_values": cache}
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=pad,
                stop_strings=[stop],
                tokenizer=self.tokenizer,
                # greedy: the checkpoint's sampling defaults (temperature, top_p) do not apply
                temperature=None,
                top_p=None,
                top_k=None,
                **cached,
                **constrain,
            )
        return [[t for t in row if t != pad and t not in self.eos_ids] for row in out[:, width:].tolist()]
