"""The schema of a hosted model's endpoint (`model.api`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from harness.errors import ConfigError


@dataclass
class ApiConfig:
    """A model served behind an OpenAI-compatible chat-completions endpoint."""

    base_url: str = MISSING
    # The model name the endpoint expects (e.g. gpt-4.1).
    model_name: str = MISSING
    # The environment variable that holds the API key; the key itself is never stored.
    # None: the endpoint needs no key (a local server).
    api_key_env: Optional[str] = None
    timeout_s: float = 30.0
    # Retries with exponential backoff on 429, 5xx and dropped connections.
    max_retries: int = 3
    concurrency: int = 4
    # USD per million tokens, for the cost columns; 0 for a local server.
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    # Worked examples (from the training split) before each query.
    few_shot: int = 0

    def __post_init__(self) -> None:
        # unset on a model preset that is not hosted: `sources.api.ApiSource.check_api` asks for it where it is needed
        if self.base_url != MISSING and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"model.api.base_url={self.base_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8000/v1"
            )
        for name in ("timeout_s", "concurrency"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.api.{name} must be > 0")
        if self.max_retries < 0 or self.few_shot < 0:
            raise ConfigError("model.api.max_retries and model.api.few_shot must be >= 0")
