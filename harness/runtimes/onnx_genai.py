"""ONNX Runtime GenAI models (a directory with `genai_config.json`) through its token loop:
`Generator.append_tokens` feeds the prompt or the chosen token, `Generator.get_logits` gives
the next token's logits, and the choice is the harness's own (`constrain.pick`), so a
label-constrained answer is chosen by the very code that chooses it on llama.cpp.

Batch 1 only. ONNX Runtime GenAI 0.18 builds a batch's attention mask from its pad token
(a row's tokens equal to `pad_token_id` are masked out), and SmolLM2's pad token is
`<|im_end|>`, which every rendered prompt holds; a batch also takes its prompts in a single
`append_tokens`, after which a row's tokens can only be forced through its logits. So the
capacity curve of this runtime has the batch-1 level only.

The shared prompt prefix is not reused: each query starts from an empty sequence, as
llama.cpp's batch-1 pass does (`Generator.rewind_to` could keep it, which would flatter
prefill against every other runtime's batch-1 figures).

A sequence started with no constraint (`measure.decoding=free`, the speed test) lets ONNX
Runtime GenAI pick its greedy token itself (`generate_next_token`, the loop its own benchmark
times): only constrained decoding pays for copying each step's logits row into Python.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from harness.errors import ConfigError
from harness.hardware import HardwareConfig
from harness.runtimes.constrain import pick
from harness.runtimes.llama_cpp import N_CTX


def session_overlay(threads: int) -> str:
    """The `genai_config.json` overlay that runs the decoder on `threads` threads: ONNX
    Runtime's intra-op pool (its default is one per core) and one inter-op thread."""
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    return json.dumps({"model": {"decoder": {"session_options": options}}})


class OnnxGenAIRuntime:
    name = "onnxruntime_genai"
    kernel = None  # MatMulNBits picks its kernel by the graph's bits and accuracy level (in the record)
    kernel_choice = None

    def __init__(self, model_dir: Path, hardware: HardwareConfig, threads: int):
        import onnxruntime_genai as og

        from harness.formats.ort import CONFIG, onnx_files

        if hardware.device != "cpu":
            raise ConfigError(
                f"hardware={hardware.device} with an ONNX Runtime GenAI model: this harness runs its CPU build "
                "(execution provider cpu) only; use hardware=cpu"
            )
        self.og = og
        self.version = og.__version__
        config = og.Config(str(model_dir))
        config.clear_providers()  # the CPU execution provider
        config.overlay(session_overlay(threads))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        genai = json.loads((model_dir / CONFIG).read_text())["model"]
        eos = genai["eos_token_id"]
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        # the same context as llama.cpp's, so the KV cache each holds is alike
        self.max_length = min(N_CTX, genai.get("context_length", N_CTX))
        self.devices = ["cpu"]
        self.model_mib = sum(p.stat().st_size for p in onnx_files(model_dir)) / 2**20
        self.generator = None
        # whether the current sequence is decoded by ONNX Runtime GenAI's own greedy search
        self.free = False

    def tokenize(self, text: str) -> list[int]:
        # The prompt text already holds the chat template's special tokens, which the
        # tokenizer reads as such (and it adds none of its own to a SmolLM2 prompt).
        return [int(t) for t in self.tokenizer.encode(text)]

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if ids else ""

    def _next(self, allowed: Optional[frozenset[int]]) -> int:
        if self.free:
            # greedy search appends the token it picks; the model runs on it in the next call
            self.generator.generate_next_token()
            return int(self.generator.get_next_tokens()[0])
        return pick(self.generator.get_logits().reshape(-1), allowed)

    def start(self, prompt_ids: list[int], allowed: Optional[frozenset[int]] = None) -> int:
        if self.generator is None:
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(do_sample=False, max_length=self.max_length, batch_size=1)
            self.generator = self.og.Generator(self.model, params)
        else:
            self.generator.rewind_to(0)
        self.free = allowed is None
        self.generator.append_tokens(prompt_ids)
        return self._next(allowed)

    def step(self, token: int, allowed: Optional[frozenset[int]] = None) -> int:
        if self.free:
            # `token` is the one greedy search picked and already appended
            if allowed is not None:
                raise ValueError("a sequence started without a constraint cannot be constrained later")
        else:
            self.generator.append_tokens([token])
        return self._next(allowed)
