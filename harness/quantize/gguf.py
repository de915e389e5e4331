"""GGUF artifacts: llama.cpp's own converter writes F16 once, every other type is quantized
from that F16 file with llama-cpp-python's `llama_model_quantize` (never from a file that
is already quantized).

The converter is `convert_hf_to_gguf.py` from the llama.cpp source that the pinned
llama-cpp-python sdist vendors; `make setup` unpacks it with its own gguf-py, which is
newer than (and not compatible with) the PyPI `gguf` package transformers uses. It runs
in a subprocess so the two gguf packages never meet in one interpreter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from harness.config import ConfigError

log = logging.getLogger(__name__)
GGUF_MAGIC = b"GGUF"


def converter_dir(configured: Optional[str]) -> Path:
    return Path(configured) if configured else Path(sys.prefix) / "share" / "llama.cpp"


def check_converter(configured: Optional[str]) -> Path:
    script = converter_dir(configured) / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise ConfigError(
            f"llama.cpp's converter is missing at {script}; run `make setup` (it unpacks it from the "
            f"llama-cpp-python sdist), or point paths.llama_cpp_dir at a llama.cpp checkout"
        )
    return script


def convert_f16(model_dir: Path, out_file: Path, llama_cpp_dir: Optional[str]) -> None:
    script = check_converter(llama_cpp_dir)
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(out_file), "--outtype", "f16"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"convert_hf_to_gguf.py failed (exit {done.returncode}):\n{tail}")


def file_type_id(gguf_type: str) -> int:
    import llama_cpp

    name = f"LLAMA_FTYPE_MOSTLY_{gguf_type}" if gguf_type not in ("F32", "ALL_F32") else "LLAMA_FTYPE_ALL_F32"
    if not hasattr(llama_cpp, name):
        raise ConfigError(f"quant.gguf_type={gguf_type} is not offered by llama-cpp-python {llama_cpp.__version__}")
    return int(getattr(llama_cpp, name))


def quantize(f16_file: Path, out_file: Path, gguf_type: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type_id(gguf_type)
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {gguf_type} failed with code {rc}")


def check_gguf_file(path: Path) -> None:
    """A clear error for a missing, truncated or foreign file, before llama.cpp reads it
    (llama.cpp reports these as a bare load failure, or worse)."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    from gguf import GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (magic {magic!r}); delete it so the harness rebuilds it")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, IndexError, struct errors on damage
        raise ValueError(f"{path} is a damaged GGUF file ({exc}); delete it so the harness rebuilds it") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ValueError(f"{path} is truncated (tensor {tensor.name} runs past the end of the file)")
