"""A model behind an OpenAI-compatible chat-completions endpoint (OpenAI, or any local server
that speaks the protocol, llama.cpp's among them).

The official `openai` client does the transport: per-request timeout, retries with
exponential backoff on 429, 5xx and dropped connections. This module adds what a benchmark
needs: the key read from a named environment variable (never stored), an early reachability
check, per-request latency and token usage, and errors that say what to fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

from harness.errors import ConfigError
from harness.runtimes.config import ApiConfig


class EndpointError(RuntimeError):
    """The endpoint failed after its retries, or answered something that is not a completion."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status

    @property
    def hopeless(self) -> bool:
        """A refusal no later request will escape (bad key, unknown model, bad request), as
        opposed to one that may pass on another try (overload, a server error, a timeout)."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 409, 429)


@dataclass
class Completion:
    text: str
    latency_s: float
    tokens_in: int
    tokens_out: int
    # Why the request failed after its retries (the text is then empty); None when it answered.
    error: Optional[str] = None


def api_key(api: ApiConfig) -> str:
    if api.api_key_env is None:
        return "not-needed"  # the client insists on a string; local servers ignore it
    key = os.environ.get(api.api_key_env)
    if not key:
        raise ConfigError(
            f"model.api.api_key_env={api.api_key_env}: that environment variable is empty or unset; "
            f"export {api.api_key_env}=<your key> (it is read at run time and never stored)"
        )
    return key


class OpenAICompatibleRuntime:
    name = "openai_compatible"

    def __init__(self, api: ApiConfig, max_new_tokens: int):
        import openai

        self.api = api
        self.version = openai.__version__
        self.max_new_tokens = max_new_tokens
        self.openai = openai
        self.client = openai.OpenAI(
            base_url=api.base_url, api_key=api_key(api), timeout=api.timeout_s, max_retries=api.max_retries
        )

    def check_reachable(self) -> None:
        """Seconds-long: the endpoint answers and knows the key, before the evaluation starts."""
        try:
            self.client.with_options(max_retries=0, timeout=min(self.api.timeout_s, 10.0)).models.list()
        except self.openai.AuthenticationError as exc:
            raise ConfigError(f"{self.api.base_url} rejected the key in ${self.api.api_key_env}: {exc}") from exc
        except (self.openai.APIConnectionError, self.openai.APITimeoutError) as exc:
            raise ConfigError(
                f"cannot reach {self.api.base_url} ({type(exc).__name__}); start the server "
                "(make serve-local) or fix model.api.base_url"
            ) from exc

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        t0 = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.api.model_name, messages=messages, temperature=0, max_tokens=self.max_new_tokens
            )
        except self.openai.APIStatusError as exc:
            raise EndpointError(
                f"{self.api.base_url} answered HTTP {exc.status_code} "
                f"(after {self.api.max_retries} retries): {exc.message}",
                status=exc.status_code,
            ) from exc
        except (self.openai.APIConnectionError, self.openai.APITimeoutError) as exc:
            raise EndpointError(
                f"{self.api.base_url}: {type(exc).__name__} after {self.api.max_retries} retries "
                f"(timeout {self.api.timeout_s:g}s per request)"
            ) from exc
        latency = time.perf_counter() - t0
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None or choices[0].message.content is None:
            raise EndpointError(f"{self.api.base_url} returned a response without a message: {str(response)[:200]}")
        usage = response.usage
        return Completion(
            text=choices[0].message.content,
            latency_s=latency,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )
