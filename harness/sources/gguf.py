"""`model.source=gguf`: a GGUF file (`model.path`) measured as it is on llama.cpp."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.sources import USER_FILE_FIX, FileSource, register

if TYPE_CHECKING:
    from harness.models import ModelConfig


@register
class GGUFFile(FileSource):
    NAME = FORMAT = "gguf"
    FILE_IS = "a .gguf file"
    IS_DIRECTORY = False
    RUNTIME = "llama_cpp_python"
    TEMPLATE_FROM = "gguf metadata"

    def check_file(self, path: Path) -> None:
        from harness.formats.gguf import check_gguf_file

        check_gguf_file(path, fix=USER_FILE_FIX)

    def check_setup(self, path: Path, model: "ModelConfig") -> None:
        from harness.gguf_header import read_header

        if not model.tokenizer and "tokenizer.chat_template" not in read_header(path).keys:
            raise ConfigError(
                f"model.path={path} has no chat template in its metadata, so its prompts cannot be rendered "
                "as it expects them: give one with model.tokenizer=<a tokenizer directory or hub id>"
            )

    def facts(self, path: Path) -> dict[str, Any]:
        """What a GGUF holds, from its header: architecture, llama.cpp file type, the share of
        parameters in each tensor type, parameter count, and whether it carries a chat template."""
        from harness.gguf_header import read_header
        from harness.store import file_digest

        header = read_header(path)
        by_type: Counter[str] = Counter()
        for tensor in header.tensors:
            by_type[tensor.type_name] += tensor.n_elements
        n_params = sum(by_type.values())
        size = path.stat().st_size
        return {
            "file": str(path.resolve()),
            "sha256": file_digest(path),
            "size_mib": size / 2**20,
            "architecture": header.values.get("general.architecture"),
            "gguf_type": header.file_type,
            "tensor_types": {k: round(v / n_params, 4) for k, v in by_type.most_common()},
            "n_params": n_params,
            "bits_per_weight": size * 8 / n_params,
            "chat_template_in_file": "tokenizer.chat_template" in header.keys,
        }

    def tokenizer(self, path: Path) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.llama_cpp import LlamaCppRuntime

        return LlamaCppRuntime(artifact, hardware, threads)
