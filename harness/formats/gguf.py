"""GGUF on llama.cpp. llama.cpp's own converter writes F16 once; every other type is
quantized from that F16 file with llama-cpp-python's `llama_model_quantize` (never from a
file that is already quantized).

With `quant.imatrix=true` the quantization is weighted by an importance matrix, as llama.cpp
users make their best low-bit files: llama.cpp's `llama-imatrix` runs the F16 file over
training rows rendered as the model sees them (cached as a stage of its own, so every type
quantized with it shares one), and `llama-quantize --imatrix` writes the type. Both tools
come from the llama.cpp source llama-cpp-python vendors (`make llama-tools`): its Python
binding cannot pass a matrix to the quantizer.

The converter is `convert_hf_to_gguf.py` from the llama.cpp source that the pinned
llama-cpp-python sdist vendors (`harness.converter` obtains it), with its own gguf-py, which
is newer than (and not compatible with) the PyPI `gguf` package transformers uses. It runs
in a subprocess so the two gguf packages never meet in one interpreter.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness.errors import ConfigError, choices
from harness.formats import BuildInputs, Format, calibration_texts, register

log = logging.getLogger(__name__)
TOOLS = ("llama-imatrix", "llama-quantize")
# llama-imatrix's context per chunk: longer than any rendered row, so rows are seldom cut.
IMATRIX_CTX = 512

# The type a bare `quant.format=gguf quant.bits=N` means: the K-quant mixes that llama.cpp
# recommends at each width (the study used Q3_K_M, Q4_K_M and Q5_K_M).
DEFAULT_TYPE: dict[int, str] = {
    2: "Q2_K",
    3: "Q3_K_M",
    4: "Q4_K_M",
    5: "Q5_K_M",
    6: "Q6_K",
    8: "Q8_0",
    16: "F16",
    32: "F32",
}
# Nominal bit width of each llama.cpp file type, to check `quant.bits` against `gguf_type`.
TYPE_BITS: dict[str, int] = {
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "Q8_0": 8,
    "Q6_K": 6,
    "Q5_0": 5,
    "Q5_1": 5,
    "Q5_K_S": 5,
    "Q5_K_M": 5,
    "Q4_0": 4,
    "Q4_1": 4,
    "Q4_K_S": 4,
    "Q4_K_M": 4,
    "IQ4_NL": 4,
    "IQ4_XS": 4,
    "Q3_K_S": 3,
    "Q3_K_M": 3,
    "Q3_K_L": 3,
    "IQ3_M": 3,
    "IQ3_XXS": 3,
    "Q2_K": 2,
    "Q2_K_S": 2,
}


@register
@dataclass
class GGUFQuant(Format):
    # llama.cpp file type (Q4_K_M, Q8_0, ...); None: the default type at `bits`.
    gguf_type: Optional[str] = None
    # Weight the quantization by an importance matrix computed on the training split.
    imatrix: bool = False
    # Training rows the importance matrix is computed on.
    calibration_samples: int = 256

    FORMATS = ("gguf",)
    PACKAGES = ("llama_cpp_python", "gguf")

    def widths(self) -> dict[int, str]:
        return dict(DEFAULT_TYPE)

    def validate(self) -> None:
        self.gguf_type = (self.gguf_type or DEFAULT_TYPE[self.bits]).upper()
        if self.gguf_type not in TYPE_BITS:
            raise ConfigError(
                f"quant.gguf_type={self.gguf_type!r} is not a llama.cpp file type this harness knows; "
                f"choose one of: {choices(TYPE_BITS)}"
            )
        if TYPE_BITS[self.gguf_type] != self.bits:
            raise ConfigError(
                f"quant.bits={self.bits} contradicts quant.gguf_type={self.gguf_type} "
                f"({TYPE_BITS[self.gguf_type]} bits); "
                f"drop quant.gguf_type for the default {self.bits}-bit type ({DEFAULT_TYPE[self.bits]}), "
                f"or set quant.bits={TYPE_BITS[self.gguf_type]}"
            )
        if self.imatrix and TYPE_BITS[self.gguf_type] >= 16:
            raise ConfigError(
                f"quant.imatrix=true with quant.gguf_type={self.gguf_type}: an unquantized type has "
                "nothing to weight; drop quant.imatrix or choose a quantized type"
            )
        if self.calibration_samples < 1:
            raise ConfigError(
                "quant.calibration_samples must be >= 1 (the importance matrix is computed on that many rows)"
            )

    @property
    def name(self) -> str:
        # the names llama.cpp users say aloud: Q4_K_M -> q4km, IQ4_XS -> iq4xs, Q8_0 -> q8_0
        return "gguf_" + re.sub(r"_(?=[a-z])", "", self.gguf_type.lower()) + ("_imat" if self.imatrix else "")

    def describe(self) -> dict:
        return {
            "gguf_type": self.gguf_type,
            "imatrix": self.imatrix,
            **({"calibration_samples": self.calibration_samples} if self.imatrix else {}),
        }

    def check(self, llama_cpp_dir: Optional[str] = None, llama_cpp_bin: Optional[str] = None) -> None:
        super().check(llama_cpp_dir, llama_cpp_bin)
        check_converter(llama_cpp_dir)
        file_type_id(self.gguf_type)
        if self.imatrix:
            tool_path("llama-imatrix", llama_cpp_bin)
            tool_path("llama-quantize", llama_cpp_bin)

    def source(self) -> Optional[Format]:
        return None if self.gguf_type == "F16" else GGUFQuant(format="gguf", bits=16)

    def key_parts(self, inputs: BuildInputs) -> list:
        # with a matrix, the file depends on the rows it was computed on, as they were rendered,
        # and on the build of the command-line tools that made it
        matrix = (
            [
                Path(inputs.data_dir).name,
                inputs.system,
                self.calibration_samples,
                *(tool_build(tool_path(t, inputs.llama_cpp_bin)) for t in TOOLS),
            ]
            if self.imatrix
            else []
        )
        return [self.format, self.gguf_type, *matrix]

    def tool(self) -> tuple[str, str]:
        import importlib.metadata

        return "llama.cpp (llama-cpp-python)", importlib.metadata.version("llama_cpp_python")

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        f16 = GGUFQuant(format="gguf", bits=16).artifact_path(source)
        if self.gguf_type == "F16":
            convert_f16(source, self.artifact_path(out), inputs.llama_cpp_dir)
        elif self.imatrix:
            matrix = importance_matrix(f16, inputs, self.calibration_samples)
            quantizer = tool_path("llama-quantize", inputs.llama_cpp_bin)
            run_tool(
                [
                    str(quantizer),
                    "--imatrix",
                    str(matrix),
                    str(f16),
                    str(self.artifact_path(out)),
                    self.gguf_type,
                    str(inputs.threads),
                ],
                quantizer.name,
            )
        else:
            quantize(f16, self.artifact_path(out), self.gguf_type, inputs.threads)

    def artifact_path(self, directory: Path) -> Path:
        return directory / f"model-{self.gguf_type}.gguf"

    def verify(self, artifact: Path) -> None:
        check_gguf_file(artifact)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.llama_cpp import LlamaCppRuntime

        return LlamaCppRuntime(artifact, hardware, threads)


GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path, fix: str = "delete it so the harness rebuilds it") -> None:
    """A clear error for a missing, truncated or foreign file, before llama.cpp loads it
    (llama.cpp reports these as a bare load failure, or worse): the magic, then the header
    and tensor table as llama.cpp's own reader parses them, then every tensor inside the file."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    from harness.gguf_header import read_header

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (magic {magic!r}); {fix}")
    try:
        header = read_header(path)
    except ValueError as exc:
        raise ValueError(
            f"{path} is a damaged GGUF file, or of a GGUF version this llama.cpp cannot read ({exc}); {fix}"
        ) from None
    size = path.stat().st_size
    if not header.tensors:
        raise ValueError(f"{path} is a GGUF file without tensors (not a model); {fix}")
    for tensor in header.tensors:
        if tensor.offset + tensor.n_bytes > size:
            raise ValueError(f"{path} is truncated (tensor {tensor.name} runs past the end of the file); {fix}")


def converter_dir(configured: Optional[str]) -> Path:
    from harness.converter import default_dir

    return Path(configured) if configured else default_dir()


def check_converter(configured: Optional[str]) -> Path:
    """The converter's script; where none is configured and none is there yet, it is fetched
    now (a pip install has no `make setup` to do it), and refused, naming the command, when that
    fails."""
    from harness.converter import COMMAND, SCRIPT, fetch, llama_cpp_python_version

    script = converter_dir(configured) / SCRIPT
    if script.is_file():
        return script
    if configured:
        raise ConfigError(
            f"paths.llama_cpp_dir={configured} holds no {SCRIPT}: point it at a llama.cpp checkout, or unpack "
            f"llama.cpp's converter there with `{COMMAND} --dest {configured}`"
        )
    from filelock import FileLock

    try:
        script.parent.parent.mkdir(parents=True, exist_ok=True)
        # the jobs of a parallel sweep all need it at once: one fetches, the others wait for it
        with FileLock(script.parent.parent / f".{script.parent.name}.lock"):
            if not script.is_file():
                log.warning(
                    "llama.cpp's converter is not at %s yet: fetching it once with `%s` (the llama-cpp-python %s "
                    "sdist, about 80 MB, from pip's index)",
                    script.parent,
                    COMMAND,
                    llama_cpp_python_version(),
                )
                fetch()
    except (subprocess.CalledProcessError, OSError, ValueError) as exc:
        raise ConfigError(
            f"llama.cpp's converter is missing at {script} and fetching it failed ({exc}): run `{COMMAND}` "
            "where pip can reach PyPI, or point paths.llama_cpp_dir at a llama.cpp checkout"
        ) from None
    return script


def convert_f16(model_dir: Path, out_file: Path, llama_cpp_dir: Optional[str]) -> None:
    script = check_converter(llama_cpp_dir)
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    run_tool(
        [sys.executable, str(script), str(model_dir), "--outfile", str(out_file), "--outtype", "f16"], script.name, env
    )


def tool_path(
    name: str, configured: Optional[str], needed_by: str = "quant.imatrix=true", make_target: str = "llama-tools"
) -> Path:
    """A llama.cpp tool: in `paths.llama_cpp_bin`, else where `make llama-tools` (or `make
    llama-server`) builds it, else on the PATH. `needed_by` and `make_target` word the error."""
    import importlib.metadata

    version = importlib.metadata.version("llama_cpp_python")
    built = Path(sys.prefix) / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp" / "build" / "bin"
    directory = Path(configured) if configured else built
    if (directory / name).is_file():
        return directory / name
    found = None if configured else shutil.which(name)  # a configured directory is meant
    if found is None:
        where = f"paths.llama_cpp_bin={configured}" if configured else f"{built} or on the PATH"
        raise ConfigError(
            f"{needed_by} needs llama.cpp's {name}, not found in {where}: run `make {make_target}` (builds it "
            "from the llama.cpp source llama-cpp-python vendors) or set paths.llama_cpp_bin to where it is"
        )
    return Path(found)


def tool_build(tool: Path) -> str:
    """A digest of a llama.cpp tool and the libraries beside it (llama.cpp's build puts
    libllama and ggml there): what keys the files it makes, since the tools report no
    version of their own and a tool from another build may quantize differently."""
    import hashlib

    from harness.store import file_digest

    parts = [tool, *sorted(p for p in tool.parent.glob("lib*.so*") if p.is_file() and not p.is_symlink())]
    return hashlib.sha256("".join(file_digest(p) for p in parts).encode()).hexdigest()[:16]


def run_tool(cmd: list[str], name: str, env: Optional[dict[str, str]] = None) -> None:
    """Run one of llama.cpp's programs; its failure is an error carrying the tail of its output."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{tail}")


def importance_matrix(f16: Path, inputs: BuildInputs, samples: int) -> Path:
    """llama.cpp's importance matrix of the F16 file over `samples` training rows, rendered
    with the file's own chat template as the model sees them in use (prompt and answer);
    cached as a stage of its own under the F16 file's key, the rows and the tool's build."""
    from transformers import AutoTokenizer

    from harness import stages

    assert inputs.cache_root, "an importance matrix is cached as a stage: BuildInputs.cache_root is needed"
    tool = tool_path("llama-imatrix", inputs.llama_cpp_bin)
    stage = stages.imatrix(f16.parent.name, Path(inputs.data_dir).name, inputs.system, samples, tool_build(tool))

    def compute(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(f16.parent, gguf_file=f16.name)
        texts = calibration_texts(tokenizer, Path(inputs.data_dir), inputs.system, samples)
        (out / "calibration.txt").write_text("\n".join(texts), encoding="utf-8")
        log.info("importance matrix: llama-imatrix over %d training rows", len(texts))
        run_tool(
            [
                str(tool),
                "-m",
                str(f16),
                "-f",
                str(out / "calibration.txt"),
                "-o",
                str(out / "imatrix.gguf"),
                "-c",
                str(IMATRIX_CTX),
                "-t",
                str(inputs.threads),
                "-ngl",
                "0",
                "--parse-special",
                "--no-ppl",
            ],
            tool.name,
        )

    return stage.cached(Path(inputs.cache_root), compute) / "imatrix.gguf"


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
