"""GGUF files on llama.cpp through llama-cpp-python's low-level evaluation calls (the
high-level completion API reuses cached prompt prefixes, which would flatter prefill)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from harness.errors import ConfigError
from harness.hardware import HardwareConfig
from harness.prompt import reusable_prefix
from harness.runtimes import answer_ends
from harness.runtimes.constrain import AnswerTrie, pick

N_CTX = 512


def logits_row(ctx, index: int, n_vocab: int):
    """A copy of the logits row `index` of the last decode (-1: the last row)."""
    import llama_cpp
    import numpy as np

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,)).copy()


class ParallelSequences:
    """A llama.cpp context holding several sequences at once in one KV buffer, decoded
    together in one `llama_batch`, as llama.cpp's server runs its parallel slots. Separate
    from the runtime's batch-1 context, and created only when batching is asked for, so the
    batch-1 figures never carry its memory.

    ggml's kernels are not batch-invariant (a row computed beside others is summed in
    another order; llama.cpp #6950), so a near-tied argmax can differ from the batch-1
    pass: the measurement records how often it does."""

    def __init__(self, model, n_seq: int, n_ctx: int, threads: int, n_vocab: int):
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = N_CTX
        params.n_seq_max = n_seq
        # One buffer for all sequences, so a shared prompt prefix is stored once.
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if self.ctx is None:
            raise RuntimeError(f"llama.cpp could not create a context for {n_seq} sequences in {n_ctx} tokens")
        self.n_seq, self.n_ctx, self.n_vocab = n_seq, n_ctx, n_vocab
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(N_CTX, 0, 1)
        self.positions: list[int] = []

    def close(self) -> None:
        import llama_cpp

        if self.ctx is not None:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def reset(self, n: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)
        self.positions = [0] * n

    def share(self, src: int, dsts: list[int]) -> None:
        """Give sequences `dsts` the cached tokens of `src` (a prefix they share)."""
        import llama_cpp

        for dst in dsts:
            llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
            self.positions[dst] = self.positions[src]

    def feed(self, items: list[tuple[int, list[int]]], logits: bool = True) -> dict[int, int]:
        """Append tokens to sequences (`(seq, tokens)` pairs), as many per decode call as a
        batch holds; the greedy next token of each sequence (none if not `logits`)."""
        return {seq: int(row.argmax()) for seq, row in self.feed_logits(items, logits).items()}

    def feed_logits(self, items: list[tuple[int, list[int]]], logits: bool = True) -> dict:
        """As `feed`, with each sequence's whole logits row (a copy) instead of its argmax."""
        import llama_cpp

        flat = [(seq, tok, logits and i == len(toks) - 1) for seq, toks in items for i, tok in enumerate(toks)]
        out = {}
        for start in range(0, len(flat), N_CTX):
            chunk, b = flat[start : start + N_CTX], self.batch
            for i, (seq, tok, last) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, self.positions[seq], 1, last
                b.seq_id[i][0] = seq
                self.positions[seq] += 1
            b.n_tokens = len(chunk)
            rc = llama_cpp.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(
                    f"llama_decode returned {rc} ({len(chunk)} tokens, {self.n_seq} sequences, n_ctx {self.n_ctx})"
                )
            for i, (seq, _, last) in enumerate(chunk):
                if last:
                    out[seq] = logits_row(self.ctx, i, self.n_vocab)
        return out


def ggml_devices() -> list[str]:
    """The compute devices llama.cpp could use in this process, as ggml's backend registry
    lists them ("CPU: <model>", "CUDA0: <GPU>"): what shows that a CPU job on a CUDA build of
    llama.cpp had no GPU in reach. Signatures from the vendored `ggml-backend.h`."""
    import ctypes

    from llama_cpp._ggml import libggml

    libggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    libggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    libggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    for getter in (libggml.ggml_backend_dev_name, libggml.ggml_backend_dev_description):
        getter.argtypes, getter.restype = [ctypes.c_void_p], ctypes.c_char_p
    devices = [libggml.ggml_backend_dev_get(i) for i in range(libggml.ggml_backend_dev_count())]
    return [
        f"{libggml.ggml_backend_dev_name(d).decode()}: {libggml.ggml_backend_dev_description(d).decode()}"
        for d in devices
    ]


class LlamaCppRuntime:
    name = "llama_cpp"
    kernel = None  # ggml picks per tensor type; the file's type is in the record
    kernel_choice = None

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
        self.threads = threads
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
        self.devices = ggml_devices()
        self.model_mib = llama_cpp.llama_model_size(self.llm.model) / 2**20
        self.n_vocab = self.llm.n_vocab()
        self.parallel: Optional[ParallelSequences] = None

    def tokenize(self, text: str) -> list[int]:
        # The prompt text already holds the chat template's special tokens.
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode(errors="replace")

    def _greedy(self, allowed: Optional[frozenset[int]]) -> int:
        # Llama.eval no longer copies logits into `scores` unless logits_all=True (which
        # would compute them for every prompt token); read the last row from the context.
        return pick(logits_row(self.llm.ctx, -1, self.n_vocab), allowed)

    def start(self, prompt_ids: list[int], allowed: Optional[frozenset[int]] = None) -> int:
        self.llm.reset()
        self.llm.eval(prompt_ids)
        return self._greedy(allowed)

    def step(self, token: int, allowed: Optional[frozenset[int]] = None) -> int:
        self.llm.eval([token])
        return self._greedy(allowed)

    def _sequences(self, n_seq: int, n_ctx: int) -> ParallelSequences:
        """The parallel context, (re)made when a call needs more sequences or room."""
        p = self.parallel
        if p is None or p.n_seq < n_seq or p.n_ctx < n_ctx:
            if p is not None:
                p.close()
            # Whole 1024-token blocks, so the next batch's slightly longer prompts fit too.
            self.parallel = p = ParallelSequences(
                self.llm.model, n_seq, -(-n_ctx // 1024) * 1024, self.threads, self.n_vocab
            )
        return p

    def start_batch(self, prompt_ids: list[list[int]]) -> list[int]:
        p = self._sequences(len(prompt_ids), len(prompt_ids) * N_CTX)
        p.reset(len(prompt_ids))
        nxt = p.feed(list(enumerate(prompt_ids)))
        return [nxt[s] for s in range(len(prompt_ids))]

    def step_batch(self, tokens: list[int]) -> list[int]:
        nxt = self.parallel.feed([(s, [t]) for s, t in enumerate(tokens)])
        return [nxt[s] for s in range(len(tokens))]

    def generate_batch(
        self, prompt_ids: list[list[int]], max_new_tokens: int, stop: str, trie: Optional[AnswerTrie] = None
    ) -> list[list[int]]:
        """Greedy answers, decoded together; a sequence leaves the batch when it ends (end of
        turn, `max_new_tokens`, or a token holding `stop`, as the batch-1 pass decides), and
        keeps to the trie's answers when one is given. The prompts' shared prefix (system
        prompt, chat markup) is evaluated once and copied to every sequence: right for an
        accuracy pass, never used for latency or speed."""
        n = len(prompt_ids)
        shared = reusable_prefix(prompt_ids)
        p = self._sequences(n, sum(len(ids) for ids in prompt_ids) + n * max_new_tokens)
        p.reset(n)
        if shared:
            p.feed([(0, prompt_ids[0][:shared])], logits=False)
            p.share(0, list(range(1, n)))
        produced: list[list[int]] = [[] for _ in prompt_ids]

        def advance(items: list[tuple[int, list[int]]]) -> dict[int, int]:
            rows = p.feed_logits(items)
            return {s: pick(row, trie.allowed(produced[s]) if trie else None) for s, row in rows.items()}

        nxt = advance([(s, ids[shared:]) for s, ids in enumerate(prompt_ids)])
        while nxt:
            going = {}
            for s, token in nxt.items():
                produced[s].append(token)
                if not answer_ends(self, token, len(produced[s]), max_new_tokens, stop):
                    going[s] = token
            nxt = advance([(s, [t]) for s, t in going.items()]) if going else {}
        return [[t for t in row if t not in self.eos_ids] for row in produced]
