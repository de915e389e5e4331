"""GGUF files on llama.cpp through llama-cpp-python's low-level evaluation calls (the
high-level completion API reuses cached prompt prefixes, which would flatter prefill)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.hardware import HardwareConfig

N_CTX = 512


class LlamaCppRuntime:
    name = "llama_cpp"
    kernel = None  # ggml picks per tensor type; the file's type is in the record

    def __init__(self, gguf_file: Path, hardware: HardwareConfig, threads: int):
        import llama_cpp

        self.version = llama_cpp.__version__
        n_gpu_layers = 0
        if hardware.device == "cuda":
            if not llama_cpp.llama_supports_gpu_offload():
                raise ConfigError(
                    "hardware=cuda with a GGUF needs llama-cpp-python built with CUDA "
                    "(CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall llama-cpp-python); "
                    "this build is CPU-only"
                )
            n_gpu_layers = -1
        self.llm = llama_cpp.Llama(
            model_path=str(gguf_file),
            n_ctx=N_CTX,
            n_batch=N_CTX,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=n_gpu_layers,
            # llama.cpp's own default (flash attention "auto") turns it on where the backend
            # supports it; llama-cpp-python defaults it off, which is ~10% slower decode here.
            flash_attn=True,
            verbose=False,
        )
        self.eos_ids = {self.llm.token_eos()}
        self.model_mib = llama_cpp.llama_model_size(self.llm.model) / 2**20
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        # The prompt text already holds the chat template's special tokens.
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode(errors="replace")

    def _greedy(self) -> int:
        # Llama.eval no longer copies logits into `scores` unless logits_all=True (which
        # would compute them for every prompt token); read the last row from the context.
        import llama_cpp
        import numpy as np

        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    def start(self, prompt_ids: list[int]) -> int:
        self.llm.reset()
        self.llm.eval(prompt_ids)
        return self._greedy()

    def step(self, token: int) -> int:
        self.llm.eval([token])
        return self._greedy()
