"""`model.source=api`: a hosted model behind an OpenAI-compatible endpoint (`model.api`),
measured as served."""

from __future__ import annotations

from typing import Optional

from omegaconf import MISSING

from harness.errors import ConfigError
from harness.sources import EndpointSource, register

ENDPOINT_FIELDS = ("base_url", "model_name")


@register
class ApiSource(EndpointSource):
    NAME = "api"

    def check_api(self, api: Optional[dict]) -> None:
        """A hosted model names its endpoint: on a preset that is not a hosted one
        (`model.source=api` on the default), its URL and model name are the user's to give."""
        unset = [f"model.api.{k}" for k in ENDPOINT_FIELDS if not api or api.get(k) in (None, MISSING)]
        if unset:
            raise ConfigError(
                f"model.source=api needs {' and '.join(unset)} (e.g. model.api.base_url=http://127.0.0.1:8765/v1 "
                "model.api.model_name=local), or start from a hosted preset: model=local_server, model=gpt41"
            )
