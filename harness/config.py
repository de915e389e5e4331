"""Typed job configuration.

The dataclasses here are the schema of every Hydra config group: registered in Hydra's
ConfigStore, they type-check YAML presets and command-line overrides, and their
``__post_init__`` checks catch impossible combinations (a format with bits it does not
support, an unknown language) the moment the config is turned into objects, before any
heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


# Record metrics a job can return to an optimising sweeper.
OBJECTIVE_METRICS = (
    "accuracy", "macro_f1", "decode_tokens_per_s", "prefill_tokens_per_s", "queries_per_s", "latency_p50_ms",
    "peak_rss_mib", "peak_vram_mib", "energy_j_per_query", "energy_estimate_j_per_query", "cost_usd_per_query",
)
# Which bit widths each format supports, and the runtime that runs its artifacts.
FORMAT_BITS: dict[str, tuple[int, ...]] = {
    "fp32": (32,),
    "fp16": (16,),
    "bf16": (16,),
    "gguf": (2, 3, 4, 5, 6, 8, 16, 32),
    "gptq": (2, 3, 4, 8),
    "bnb": (4, 8),
    # A hosted model's weights are whatever its provider serves: 0 = unknown.
    "hosted": (0,),
}
FORMAT_RUNTIME: dict[str, str] = {
    "fp32": "transformers",
    "fp16": "transformers",
    "bf16": "transformers",
    "gguf": "llama_cpp",
    "gptq": "transformers",
    "bnb": "transformers",
    "hosted": "openai_compatible",
}
# Group sizes gptqmodel's kernels take (-1: one group per weight row).
GPTQ_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)
# The llama.cpp type a bare `quant.format=gguf quant.bits=N` means: the K-quant mixes that
# llama.cpp recommends at each width (the study used Q3_K_M, Q4_K_M and Q5_K_M).
GGUF_DEFAULT_TYPE: dict[int, str] = {
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
GGUF_TYPE_BITS: dict[str, int] = {
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
KNOWN_LANGUAGES = {
    "en": "English",
    "hr": "Croatian",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
}


def _choices(values: Any) -> str:
    return ", ".join(str(v) for v in values)


@dataclass
class ApiConfig:
    """A model served behind an OpenAI-compatible chat-completions endpoint."""

    base_url: str = MISSING
    # The model name the endpoint expects (e.g. gpt-4.1).
    model_name: str = MISSING
    # The environment variable that holds the API key; the key itself is never stored.
    # None: the endpoint needs no key (a local server).
    api_key_env: Optional[str] = None
    timeout_s: float = 30.0
    # Retries with exponential backoff on 429, 5xx and dropped connections.
    max_retries: int = 3
    concurrency: int = 4
    # USD per million tokens, for the cost columns; 0 for a local server.
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    # Worked examples (from the training split) before each query.
    few_shot: int = 0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"model.api.base_url={self.base_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        for name in ("timeout_s", "concurrency"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.api.{name} must be > 0")
        if self.max_retries < 0 or self.few_shot < 0:
            raise ConfigError("model.api.max_retries and model.api.few_shot must be >= 0")


@dataclass
class ModelConfig:
    """The base model. `source=embedded` loads a GGUF shipped inside a Python package;
    `source=hf` loads a Hugging Face id (needs network or a warm HF cache); `source=local`
    a Hugging Face checkpoint directory on disk."""

    name: str = MISSING
    source: str = "embedded"
    hf_id: Optional[str] = None
    revision: str = "main"
    package: Optional[str] = None
    gguf_file: Optional[str] = None
    path: Optional[str] = None
    # A short system prompt; the chat template's own default can be longer than the query.
    system_prompt: str = "Classify the e-commerce query. Answer with JSON."
    # source=api: the endpoint that serves the model.
    api: Optional[ApiConfig] = None

    def __post_init__(self) -> None:
        if self.source == "embedded":
            if not (self.package and self.gguf_file):
                raise ConfigError(
                    f"model={self.name}: source=embedded needs model.package and model.gguf_file "
                    "(the Python package that ships the GGUF and the file name inside it)"
                )
        elif self.source == "hf":
            if not self.hf_id:
                raise ConfigError(
                    f"model={self.name}: source=hf needs model.hf_id, "
                    "e.g. model.hf_id=meta-llama/Llama-3.2-1B-Instruct"
                )
        elif self.source == "local":
            if not self.path:
                raise ConfigError(f"model={self.name}: source=local needs model.path (a checkpoint directory)")
        elif self.source == "api":
            if self.api is None:
                raise ConfigError(f"model={self.name}: source=api needs model.api (base_url, model_name, ...)")
        else:
            raise ConfigError(
                f"model.source={self.source!r} is unknown; choose one of: embedded, hf, local, api"
            )


@dataclass
class QuantConfig:
    """A quantization variant: format + bits, plus the options of that format."""

    name: str = MISSING
    format: str = "gguf"
    bits: int = 4
    # llama.cpp file type (Q4_K_M, Q8_0, ...); derived from bits when not given.
    gguf_type: Optional[str] = None
    # GPTQ options: weights per scale group, activation-order quantization, and how many
    # training rows calibrate it.
    group_size: int = 128
    desc_act: bool = False
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        if self.format not in FORMAT_BITS:
            raise ConfigError(
                f"quant.format={self.format!r} is unknown; choose one of: {_choices(FORMAT_BITS)}"
            )
        supported = FORMAT_BITS[self.format]
        if self.bits not in supported:
            raise ConfigError(
                f"quant.bits={self.bits} is not supported by quant.format={self.format}; "
                f"supported bits: {_choices(supported)}"
            )
        if self.calibration_samples < 1:
            raise ConfigError("quant.calibration_samples must be >= 1 (GPTQ calibrates on that many training rows)")
        if self.format == "gptq" and self.group_size not in GPTQ_GROUP_SIZES:
            raise ConfigError(
                f"quant.group_size={self.group_size} is not a GPTQ group size; choose one of: "
                f"{_choices(GPTQ_GROUP_SIZES)} (-1 = one group per weight row)"
            )
        if self.format == "gguf":
            if self.gguf_type is None:
                self.gguf_type = GGUF_DEFAULT_TYPE[self.bits]
            self.gguf_type = self.gguf_type.upper()
            if self.gguf_type not in GGUF_TYPE_BITS:
                raise ConfigError(
                    f"quant.gguf_type={self.gguf_type!r} is not a llama.cpp file type this harness "
                    f"knows; choose one of: {_choices(GGUF_TYPE_BITS)}"
                )
            if GGUF_TYPE_BITS[self.gguf_type] != self.bits:
                preset = f"gguf_{GGUF_DEFAULT_TYPE[self.bits].lower().replace('_', '')}"
                raise ConfigError(
                    f"quant.bits={self.bits} contradicts quant.gguf_type={self.gguf_type} "
                    f"({GGUF_TYPE_BITS[self.gguf_type]} bits); pick a preset such as quant={preset}, "
                    f"or set quant.gguf_type to a {self.bits}-bit type"
                )
        elif self.gguf_type is not None:
            raise ConfigError(
                f"quant.gguf_type is only for quant.format=gguf, not {self.format}; remove it"
            )

    @property
    def runtime(self) -> str:
        return FORMAT_RUNTIME[self.format]


@dataclass
class HardwareConfig:
    name: str = "cpu"
    device: str = "cpu"
    # Threads for every runtime alike (torch intra-op, llama.cpp n_threads); 0 = all cores.
    threads: int = 0
    # Optional: watts per busy core (package TDP / cores) for a CPU-time energy *estimate*,
    # reported apart from measured energy, where no counter can be read.
    cpu_watts_per_core: Optional[float] = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"hardware.device={self.device!r} is unknown; choose cpu or cuda")
        if self.threads < 0:
            raise ConfigError(f"hardware.threads={self.threads} must be >= 0 (0 = all cores)")
        if self.cpu_watts_per_core is not None and self.cpu_watts_per_core <= 0:
            raise ConfigError("hardware.cpu_watts_per_core must be > 0 (or null for no estimate)")


@dataclass
class LanguageConfig:
    # code -> name. A dict rather than a list so that `language=[en,hr]` merges the two
    # presets into one selection (Hydra merges dicts but replaces lists).
    codes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codes:
            raise ConfigError("language: no language selected; e.g. language=all or language=[en,hr]")
        unknown = sorted(set(self.codes) - set(KNOWN_LANGUAGES))
        if unknown:
            raise ConfigError(
                f"language: unknown code(s) {_choices(unknown)}; known: {_choices(KNOWN_LANGUAGES)}"
            )


DATASET_KINDS = ("synthetic", "jsonl", "csv", "hf")
SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class DatasetConfig:
    """`kind=synthetic` generates; `jsonl` / `csv` read the user's files (`files`, split ->
    path); `hf` loads `hf_name` with the `datasets` library. Splits that are missing are cut
    from train, seeded and stratified by label."""

    name: str = "synthetic"
    kind: str = "synthetic"
    seed: int = 0
    # synthetic: examples per intent per language in each split.
    train_per_cell: int = 20
    validation_per_cell: int = 2
    test_per_cell: int = 6
    # jsonl / csv: split name -> file path; at least `train`.
    files: dict[str, str] = field(default_factory=dict)
    # hf: dataset id (and config name); split names are the dataset's own.
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    text_column: str = "text"
    label_column: str = "intent"
    # None: every row is in `default_language`.
    language_column: Optional[str] = "language"
    default_language: str = "en"
    # The label set; empty = read from the data.
    labels: list[str] = field(default_factory=list)
    # Fractions of train cut off for a missing validation / test split.
    validation_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ConfigError(f"dataset.kind={self.kind!r} is unknown; choose one of: {_choices(DATASET_KINDS)}")
        if self.kind == "synthetic":
            for split in SPLIT_NAMES:
                if getattr(self, f"{split}_per_cell") < 1:
                    raise ConfigError(f"dataset.{split}_per_cell must be >= 1")
        if self.kind in ("jsonl", "csv"):
            if "train" not in self.files:
                raise ConfigError(
                    f"dataset.kind={self.kind} needs dataset.files.train (a path); "
                    f"e.g. +dataset.files.train=data/train.{self.kind}"
                )
            unknown = sorted(set(self.files) - set(SPLIT_NAMES))
            if unknown:
                raise ConfigError(f"dataset.files: unknown split(s) {_choices(unknown)}; use {_choices(SPLIT_NAMES)}")
        if self.kind == "hf" and not self.hf_name:
            raise ConfigError("dataset.kind=hf needs dataset.hf_name (a Hugging Face dataset id)")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError(f"dataset.{name} must be between 0 and 0.5")
        if self.labels and len(set(self.labels)) < 2:
            raise ConfigError("dataset.labels needs at least 2 distinct labels")


@dataclass
class TrainConfig:
    name: str = "lora"
    method: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 1e-3
    epochs: float = 1.0
    # > 0 caps the number of optimizer steps (overrides epochs).
    max_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 96
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("lora", "qlora", "none"):
            raise ConfigError(f"train.method={self.method!r} is unknown; choose one of: lora, qlora, none")
        for name in ("r", "alpha", "batch_size", "grad_accum", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("train: set train.epochs > 0 or train.max_steps > 0")


@dataclass
class MeasureConfig:
    # Fixed-shape speed test, as llama-bench's pp/tg: prefill prompt_tokens, decode gen_tokens.
    prompt_tokens: int = 64
    gen_tokens: int = 32
    warmup: int = 1
    min_reps: int = 3
    min_seconds: float = 2.0
    # Longest answer the evaluator lets the model write; {"intent": "..."} fits well within.
    max_new_tokens: int = 16
    # 0 = the whole test split.
    max_eval_samples: int = 0
    # The accuracy pass decodes this many queries at once on runtimes that batch
    # (transformers); llama.cpp answers one at a time.
    eval_batch_size: int = 16
    # Per-query latency, time to first token and energy come from a batch-1 pass: over the
    # whole test split where the accuracy pass is itself batch 1, else over this many queries.
    latency_samples: int = 100
    # The measurement runs in a spawned process; this bounds it.
    timeout_s: float = 1800.0
    # Decode throughput at these batch sizes too, for runtimes that batch (transformers);
    # others report null for sizes above 1.
    batch_sizes: list[int] = field(default_factory=lambda: [1])

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "gen_tokens", "min_reps", "max_new_tokens", "eval_batch_size", "latency_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"measure.{name} must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("measure.batch_sizes must be a non-empty list of sizes >= 1, e.g. [1,8,32]")


@dataclass
class PathsConfig:
    root: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    # llama.cpp's converter and gguf-py, unpacked by `make setup` from the llama-cpp-python
    # sdist into <venv>/share/llama.cpp, which is where None looks.
    llama_cpp_dir: Optional[str] = None


@dataclass
class LoggerConfig:
    # wandb: one W&B run per job and a summary run per sweep; none: records and report only.
    name: str = "wandb"
    project: str = "slm-harness"
    entity: Optional[str] = None
    # offline (the default): runs are files under `dir`, uploaded later with `wandb sync`;
    # online needs a login (`wandb login` or WANDB_API_KEY).
    mode: str = "offline"
    dir: str = "outputs"
    # None: the sweep's directory names (date_time), so the jobs of one sweep group together.
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name not in ("wandb", "none"):
            raise ConfigError(f"logger={self.name!r} is unknown; choose logger=wandb or logger=none")
        if self.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode={self.mode!r} is unknown; choose offline, online or disabled (as WANDB_MODE)")


@dataclass
class JobConfig:
    # MISSING, not default instances: each group is filled by its preset in conf/, and only
    # the composed result is validated (defaults alone are not a valid job).
    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    hardware: HardwareConfig = MISSING
    language: LanguageConfig = MISSING
    dataset: DatasetConfig = MISSING
    train: TrainConfig = MISSING
    measure: MeasureConfig = MISSING
    paths: PathsConfig = MISSING
    logger: LoggerConfig = MISSING
    # Re-measure even when a finished record for this job exists.
    force: bool = False
    # What the app returns, for sweepers that optimise (hydra/sweeper=optuna): these metrics
    # of the record, in this order; the sweeper's `direction` list must match them.
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "decode_tokens_per_s"])

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVE_METRICS]
        if unknown or not self.objectives:
            raise ConfigError(f"objectives={self.objectives}: choose from {_choices(OBJECTIVE_METRICS)}")
        hosted = self.model.source == "api"
        if hosted != (self.quant.format == "hosted"):
            raise ConfigError(
                "quant=hosted is only for hosted models (model.source=api, e.g. model=local_server)"
                if not hosted else f"model={self.model.name} is hosted: it runs with quant=hosted only"
            )
        if hosted and self.train.method != "none":
            raise ConfigError(f"model={self.model.name} is hosted and cannot be fine-tuned here; use train=none")


def serve_as_is(cfg: DictConfig, overrides: list[str]) -> None:
    """A hosted model is measured as its provider serves it: no quantization, no fine-tuning.
    For one, the quant and train defaults give way to quant=hosted and train=none; asking for
    another quant or train explicitly (on the command line or in a sweep) is an error."""
    if cfg.model.source != "api":
        return
    asked = {o.lstrip("+~").split("=")[0].split(".")[0] for o in overrides}
    for group, preset, fits in (("quant", "hosted", cfg.quant.format == "hosted"), ("train", "none", cfg.train.method == "none")):
        if fits:
            continue
        if group in asked:
            raise ConfigError(
                f"model={cfg.model.name} is a hosted model, measured as served: {group}={cfg[group].name} does not "
                f"apply to it; drop the {group} override for this model (sweep hosted and local models separately)"
            )
        cfg[group] = QuantConfig(name=preset, format="hosted", bits=0) if group == "quant" else TrainConfig(name=preset, method=preset)


def register_configs() -> None:
    cs = ConfigStore.instance()
    # The first entry of conf/config.yaml's defaults: every group merged after it is
    # type-checked against these dataclasses, and unknown keys are rejected.
    cs.store(name="job_schema", node=JobConfig)


def to_job_config(cfg: DictConfig) -> JobConfig:
    """Turn a composed config into validated objects; raises ConfigError naming the fix."""
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, JobConfig)
    return job
