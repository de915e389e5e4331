"""Runtimes run an artifact token by token; every measurement in `harness.measure` is
written against the small `Runtime` interface below, so a new runtime gets accuracy,
latency, throughput and memory figures without code of its own. A format's `open` picks
the runtime for its artifact (`Opener`)."""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from harness.runtimes.constrain import AnswerTrie


def answer_ends(rt: "Runtime", token: int, produced: int, max_new_tokens: int, stop: str) -> bool:
    """Where greedy decoding of an answer stops, one rule for every pass and runtime: end of
    turn, `max_new_tokens` tokens produced, or a token whose text holds `stop`."""
    return token in rt.eos_ids or produced >= max_new_tokens or stop in rt.detokenize([token])


class Runtime(Protocol):
    name: str
    version: str
    eos_ids: set[int]
    # The model's weights in memory as the runtime reports them.
    model_mib: float
    # The quantized layer implementation the runtime's library picked, where it picks one.
    kernel: Optional[str]
    # The kernel the format asked for, with its setup time and any fallback's reason.
    kernel_choice: Optional[dict]
    # The compute devices this process could see, as the runtime's library lists them.
    devices: list[str]

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def start(self, prompt_ids: list[int], allowed: Optional[frozenset[int]] = None) -> int:
        """Forget any previous sequence, prefill `prompt_ids`, return the greedy next token
        (among `allowed`, when given)."""

    def step(self, token: int, allowed: Optional[frozenset[int]] = None) -> int:
        """Append one token, return the greedy next token (among `allowed`, when given)."""


@runtime_checkable
class BatchingRuntime(Runtime, Protocol):
    """A runtime that decodes several sequences at once (batched throughput, and a faster
    accuracy pass)."""

    def start_batch(self, prompt_ids: list[list[int]]) -> list[int]:
        """Prefill equal-length prompts together; the greedy next token of each."""

    def step_batch(self, tokens: list[int]) -> list[int]:
        """Append one token to each sequence; the greedy next token of each."""

    def generate_batch(
        self, prompt_ids: list[list[int]], max_new_tokens: int, stop: str, trie: Optional[AnswerTrie] = None
    ) -> list[list[int]]:
        """Greedy answers (token ids, end of turn left out) to prompts of any lengths, decoded
        together; a row stops at end of turn, at `max_new_tokens`, or once its text holds `stop`.
        With `trie`, each row's answer is restricted to the trie's answers."""


class Opener(Protocol):
    """What opens an artifact on its runtime, in the measuring process: a quant format (the
    artifact it built), or a model file's source (`sources.FileSource`)."""

    def prepare_kernels(self, hardware) -> None:
        """Build or load the kernels the runtime will use, before the load is timed."""

    def open(self, artifact, hardware, threads: int) -> Runtime: ...
