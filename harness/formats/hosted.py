"""A hosted model: whatever its provider serves behind an OpenAI-compatible endpoint. Nothing
is built here and the weights' width is unknown (bits 0); `model.api` says where it is."""

from __future__ import annotations

from dataclasses import dataclass

from harness.formats import QuantConfig, register


@register
@dataclass
class HostedQuant(QuantConfig):
    bits: int = 0

    FORMATS = ("hosted",)
    RUNTIME = "openai_compatible"
    PACKAGES = ("openai",)
    EXTRA = "hosted"
    HOSTED = True

    def widths(self) -> dict[int, str]:
        return {0: "as served"}

    @property
    def name(self) -> str:
        return "hosted"
