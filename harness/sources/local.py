"""`model.source=local`: a Hugging Face checkpoint directory on disk (`model.path`), built
here like any other base model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.errors import ConfigError
from harness.sources import BuiltSource, register

if TYPE_CHECKING:
    from harness.models import ModelConfig


@register
class LocalSource(BuiltSource):
    NAME = "local"

    def unset_need(self, model: "ModelConfig") -> Optional[str]:
        return None if model.path else "model.path (a checkpoint directory)"

    def check_available(self, model: "ModelConfig") -> None:
        local_dir(model)

    def base_model_dir(self, model: "ModelConfig", cache_root: Path, timeout_s: float) -> tuple[Path, str]:
        from harness import stages
        from harness.store import file_digest

        path = local_dir(model)
        weights = sorted(path.glob("*.safetensors")) + [path / "config.json"]
        return path, stages.base([file_digest(p) for p in weights]).key


def local_dir(model: "ModelConfig") -> Path:
    assert model.path
    path = Path(model.path)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.path={model.path!r} is not a Hugging Face checkpoint directory (no config.json there)"
        )
    return path
