"""Quantization formats: one module each in this package, found here.

A format module defines a subclass of `Format`, the format's plugin, decorated with
`@register`. The dataclass is the format's options (its fields are the `quant.*` keys it
takes, type-checked and validated when a job is composed), and its methods are everything
the rest of the harness asks of a format: which bit widths exist and what each means, a cheap check that its tools
are installed, what its artifact's cache key depends on, how to build the artifact (in a
spawned process), and which runtime opens it. Nothing outside this package looks at a
format's name; adding a format is one module here and one preset in `conf/quant/`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError, UnsupportedCell, choices
from harness.extras import require

if TYPE_CHECKING:
    from harness.hardware import HardwareConfig
    from harness.runtimes import Runtime


# What a build found it quantized, read back from its artifact, beside the artifact.
BUILT_FACTS = "quantized.json"


@dataclass
class BuildInputs:
    """What a build may read besides its source: the training split (to calibrate on, as the
    model sees it: rendered with `system`), the machine's threads and device, and where
    llama.cpp's converter lives. Plain values: a build runs in a spawned process."""

    data_dir: str
    system: str
    threads: int
    device: str
    llama_cpp_dir: Optional[str] = None
    llama_cpp_bin: Optional[str] = None
    # The stage cache, for what a build caches as a stage of its own (an importance matrix).
    cache_root: Optional[str] = None


@dataclass
class Format:
    """A quantization format: its options (what every format has, its name and its bit width,
    and a subclass's own) and what it does (build, verify and open its artifact). A job's
    `quant` is one, and the measuring process opens the artifact through it (an `Opener`)."""

    format: str = MISSING
    bits: int = MISSING

    # The `quant.format` names this class answers to (one module may serve several, as the
    # unquantized fp32 / fp16 / bf16 do).
    FORMATS: ClassVar[tuple[str, ...]] = ()
    # Python distributions whose versions a record's provenance lists; each must be
    # installed for the format to run (`check`).
    PACKAGES: ClassVar[tuple[str, ...]] = ()
    # The pyproject extra that installs them ("" for the core's formats).
    EXTRA: ClassVar[str] = ""

    def __post_init__(self) -> None:
        widths = self.widths()
        if self.bits not in widths:
            raise UnsupportedCell(
                f"quant.bits={self.bits} is not supported by quant.format={self.format}; supported bits: "
                f"{choices(widths)}"
            )
        self.validate()

    def widths(self) -> dict[int, str]:
        """Bit width -> what the format builds at that width by default."""
        raise NotImplementedError

    def validate(self) -> None:
        """Checks of the format's own options, raising ConfigError with the fix."""

    @property
    def name(self) -> str:
        """What runs, as a short path-safe name: the same for a preset and for the same
        variant spelled out on the command line."""
        return f"{self.format}{self.bits}"

    def describe(self) -> dict[str, Any]:
        """The record's `artifact` fields that say what was built, beyond format and bits."""
        return {}

    def check(self, llama_cpp_dir: Optional[str] = None, llama_cpp_bin: Optional[str] = None) -> None:
        """Seconds-long: the format's packages (and llama.cpp's converter and tools, where it
        builds with them: `BuildInputs`' paths, None for their default places) are installed."""
        require(f"quant.format={self.format}", self.PACKAGES, self.EXTRA)

    # --- building, for formats built here ---

    def source(self) -> Optional["Format"]:
        """Another artifact this one is built from (GGUF types from the GGUF F16), or None to
        build from the full-precision checkpoint."""
        return None

    def key_parts(self, inputs: BuildInputs) -> list[Any]:
        """What the artifact depends on besides its source and the tool's version."""
        return [self.format, self.bits]

    def tool(self) -> tuple[str, str]:
        """(the tool that builds the artifact, its version)."""
        name = self.PACKAGES[0]
        return name, importlib.metadata.version(name)

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        """Write the artifact into the empty directory `out` (runs in a spawned process)."""
        raise NotImplementedError

    def artifact_path(self, directory: Path) -> Path:
        """The artifact inside its cache directory: a file, or the directory itself."""
        return directory

    def weight_files(self, artifact: Path) -> list[Path]:
        """The artifact's weights on disk: what its size counts."""
        return [artifact] if artifact.is_file() else sorted(artifact.glob("*.safetensors"))

    def built_facts(self, artifact: Path) -> dict[str, Any]:
        """The record's `artifact` fields read from what was built (what the tool chose to
        quantize), beyond what the options say (`describe`): the `quantized` summary a build
        wrote beside its artifact (`BUILT_FACTS`), where it wrote one."""
        facts = artifact.parent / BUILT_FACTS
        return {"quantized": json.loads(facts.read_text())} if facts.is_file() else {}

    def verify(self, artifact: Path) -> None:
        """Seconds-long, in the sweep's process: the artifact is whole, so a damaged file is a
        clear error rather than a native crash in the runtime (and the check weighs nothing on
        the measured process's memory)."""

    def prepare_kernels(self, hardware: "HardwareConfig") -> None:
        """In the measuring process, before the load is timed: build or load the kernels the
        runtime will use, so a one-time compile is not charged to `load_s`."""

    def open(self, artifact: Path, hardware: "HardwareConfig", threads: int) -> "Runtime":
        """The runtime serving this artifact."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Format]] = {}


def register(cls: type[Format]) -> type[Format]:
    for name in cls.FORMATS:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"quant.format={name} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        _REGISTRY[name] = cls
    return cls


def registry() -> dict[str, type[Format]]:
    """quant.format -> its options class, every module of this package imported once."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")  # cached after the first time
    return _REGISTRY


def quant_from_dict(node: dict[str, Any]) -> Format:
    """The `quant` group as its format's options, type-checked against that format's own
    schema and validated; ConfigError (UnsupportedCell for a width the format lacks) names
    the field and the fix."""
    node = dict(node)
    fmt = node.get("format")
    formats = registry()
    if fmt not in formats:
        raise ConfigError(f"quant.format={fmt!r} is unknown; choose one of: {choices(sorted(formats))}")
    cls = formats[fmt]
    options = [f.name for f in dataclasses.fields(cls)]
    if "name" in node:
        raise ConfigError("quant.name is derived from what the job runs (format, bits, options); remove quant.name")
    # A preset starts from its format's schema: after `quant.format=<another>`, that schema's
    # untouched defaults are still there, and are no one's choice.
    # (Two formats may share an option name with different defaults: GPTQ's and OpenVINO's
    # calibration_samples.)
    defaults: dict[str, list] = {}
    for c in formats.values():
        for f in dataclasses.fields(c):
            defaults.setdefault(f.name, []).append(f.default)
    node = {k: v for k, v in node.items() if k in options or v not in defaults.get(k, [])}
    foreign = sorted(set(node) - set(options))
    if foreign:
        raise ConfigError(
            f"quant.{foreign[0]} is not an option of quant.format={fmt} (its options: {choices(options)}); "
            f"remove it, or start from a {fmt} preset"
        )
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls), node)
        quant = OmegaConf.to_object(typed)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"quant.{key}={node.get(key)!r}: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    assert isinstance(quant, Format)
    return quant


def quant_name(node: Any) -> str:
    """The derived name of a composed `quant` node, for Hydra's run directories; a node
    that does not validate is named by its format and bits (its job fails with the reason)."""
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    try:
        return quant_from_dict(plain).name
    except ConfigError:
        return f"{plain.get('format')}{plain.get('bits')}"


def calibration_texts(tokenizer, data_dir: Path, system: str, n: int) -> list[str]:
    """Calibration for formats that calibrate (GPTQ, GGUF importance matrices): `n` training
    rows from across the split, as the model sees them in use: prompt plus answer."""
    from harness.data.dataset import read_split, spread
    from harness.prompt import answer, render_prompt

    rows = spread(read_split(data_dir, "train"), n)
    return [render_prompt(tokenizer, r["text"], system) + answer(r["intent"]) for r in rows]


def layer_widths(config: dict[str, Any]) -> tuple[int, ...]:
    """The input widths of a decoder's linear layers (what a quantization group must tile),
    from its `config.json`: the hidden size, the MLP's intermediate size, the attention
    output's heads x head size."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return config["hidden_size"], config["intermediate_size"], config["num_attention_heads"] * head_dim


def parameter_count(model_dir: Path) -> int:
    """Parameters of a safetensors checkpoint, read from its headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                n = 1
                for dim in f.get_slice(name).get_shape():
                    n *= dim
                total += n
    return total
