"""`model.source=onnx`: an ONNX Runtime GenAI model directory (`model.path`) measured as it
is on onnxruntime-genai."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.sources import USER_FILE_FIX, FileSource, dir_digest, register


@register
class OnnxDirectory(FileSource):
    NAME = FORMAT = "onnx"
    FILE_IS = "an ONNX Runtime GenAI model directory"
    RUNTIME = "onnxruntime_genai"
    EXTRA = "onnx"

    def check_file(self, path: Path) -> None:
        from harness.formats.ort import check_onnx_dir

        check_onnx_dir(path, fix=USER_FILE_FIX)

    def facts(self, path: Path) -> dict[str, Any]:
        """What an ONNX Runtime GenAI directory holds: its architecture as `genai_config.json`
        names it, what its graph quantized (the output layer's and the embedding's weight types
        among them), the size of its graph and weights, one digest over its files."""
        from harness.formats.ort import CONFIG, onnx_files, weight_summary

        self.check_file(path)
        genai = json.loads((path / CONFIG).read_text())["model"]
        return {
            "file": str(path.resolve()),
            "sha256": dir_digest(path),
            "size_mib": sum(p.stat().st_size for p in onnx_files(path)) / 2**20,
            "architecture": genai.get("type"),
            "quantized": weight_summary(path),
        }

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.onnx_genai import OnnxGenAIRuntime

        return OnnxGenAIRuntime(artifact, hardware, threads)
