"""`model.source=openvino`: an OpenVINO model directory (its IR and tokenizer IRs,
`model.path`) measured as it is on OpenVINO GenAI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.sources import USER_FILE_FIX, FileSource, dir_digest, register


@register
class OpenVINODirectory(FileSource):
    NAME = FORMAT = "openvino"
    FILE_IS = "an OpenVINO model directory"
    RUNTIME = "openvino_genai"
    EXTRA = "openvino"

    def check_file(self, path: Path) -> None:
        from harness.formats.openvino import check_openvino_dir

        check_openvino_dir(path, fix=USER_FILE_FIX)

    def facts(self, path: Path) -> dict[str, Any]:
        """What an OpenVINO model directory holds: its architecture as its `config.json` names
        it, what its IR compressed (the output layer's and the embedding's weight types among
        them), the size of its IR, one digest over its files."""
        from harness.formats.openvino import ir_files, weight_summary

        self.check_file(path)
        config = path / "config.json"
        architectures = json.loads(config.read_text()).get("architectures") if config.is_file() else None
        return {
            "file": str(path.resolve()),
            "sha256": dir_digest(path),
            "size_mib": sum(p.stat().st_size for p in ir_files(path)) / 2**20,
            "architecture": (architectures or [None])[0],
            "quantized": weight_summary(path),
        }

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.openvino_genai import OpenVINORuntime

        return OpenVINORuntime(artifact, hardware, threads)
