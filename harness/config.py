"""The job's configuration: the schema Hydra composes into, and the rules across groups.

Each group's schema lives next to the code that uses it (`models.ModelConfig`,
`formats.*` for `quant`, `hardware.HardwareConfig`, `data.config`, `train.config`,
`measure.config`, `report.config`, `runtimes.config`); `JobConfig` registers them all in
Hydra's ConfigStore, so YAML presets and command-line overrides are type-checked when the
job is composed. `quant` is the one group whose schema depends on a value, its format: it is
parsed against that format's own dataclass right after composition, before any work. A
model that is not built here (a model file, a hosted model: `harness.sources`) has no
`quant` and no `train`: their defaults are dropped, and a choice of either is refused. Every
`__post_init__` check raises ConfigError naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from harness.data.config import DatasetConfig, LanguageConfig
from harness.errors import ConfigError, choices
from harness.formats import Format, quant_from_dict, quant_name, registry
from harness.hardware import HardwareConfig
from harness.job_info import job_info
from harness.measure.config import MeasureConfig
from harness.models import ModelConfig
from harness.record import job_label
from harness.report.columns import OBJECTIVES
from harness.report.config import LoggerConfig, ReportConfig
from harness.sources import BUILT, ENDPOINT, Source, source_of
from harness.train.config import TrainConfig


@dataclass
class PathsConfig:
    root: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    # llama.cpp's converter and gguf-py; None: <sys.prefix>/share/llama.cpp, where
    # `python -m harness.converter` (run by `make setup`, or on first need) unpacks them.
    llama_cpp_dir: Optional[str] = None
    # llama.cpp's command-line tools (llama-imatrix, llama-quantize, llama-bench), built by
    # `make llama-tools` from the same vendored source; None: that build, then the PATH.
    llama_cpp_bin: Optional[str] = None
    # The machine-wide lock one measurement at a time holds (harness.measure.window); None:
    # /var/lock, else the system's temporary directory. Never on storage nodes share.
    measure_lock: Optional[str] = None


@dataclass
class JobConfig:
    # MISSING, not default instances: each group is filled by its preset in conf/, and only
    # the composed result is validated (defaults alone are not a valid job).
    model: ModelConfig = MISSING
    # The format's own options dataclass (see harness.formats) once parsed.
    # Typed here as what every format has; a preset's own schema (quant/schema/<format>)
    # types its options, and `to_job_config` parses the node as its format's dataclass.
    # None for a model that is not built here (a model file, a hosted model).
    quant: Optional[Format] = MISSING
    hardware: HardwareConfig = MISSING
    language: LanguageConfig = MISSING
    dataset: DatasetConfig = MISSING
    train: TrainConfig = MISSING
    measure: MeasureConfig = MISSING
    paths: PathsConfig = MISSING
    logger: LoggerConfig = MISSING
    # How the sweep's report judges its variants (baseline, non-inferiority gate).
    report: ReportConfig = field(default_factory=ReportConfig)
    # Re-measure even when a finished record for this job exists.
    force: bool = False
    # Each build stage (base model, fine-tune, merge, quantize) runs in a spawned process
    # stopped after this long.
    build_timeout_s: float = 7200.0
    # What the app returns, for sweepers that optimise (hydra/sweeper=optuna): these metrics
    # of the record, in this order; the sweeper's `direction` list must match them.
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "decode_tokens_per_s"])

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ConfigError(f"objectives={self.objectives}: choose from {choices(OBJECTIVES)}")
        if self.build_timeout_s <= 0:
            raise ConfigError("build_timeout_s must be > 0 (seconds each build stage may take)")
        if self.model.kind == ENDPOINT and self.measure.decoding != "free":
            raise ConfigError(
                f"measure.decoding={self.measure.decoding} restricts the tokens a local runtime picks; a hosted model "
                "writes its answer itself: use measure.decoding=free, with the label list in its prompt and "
                "model.api.few_shot=k worked examples"
            )
        if self.measure.serve == "server" and not self._gguf():
            what = f"quant={self.quant.name}" if self.quant is not None else f"model.source={self.model.source}"
            raise ConfigError(
                f"measure.serve=server serves a GGUF behind llama.cpp's llama-server; {what} is not one: choose a "
                "GGUF quant (e.g. quant=gguf_q4km) or model.source=gguf, or drop measure.serve=server"
            )
        if self.dataset.kind == "synthetic":
            from harness.data.synthetic import KNOWN_LANGUAGES

            unknown = sorted(set(self.language.codes) - set(KNOWN_LANGUAGES))
            if unknown:
                raise ConfigError(
                    f"language: the synthetic dataset has no phrasings in {choices(unknown)}; it knows "
                    f"{choices(KNOWN_LANGUAGES)} (your own data, dataset=jsonl/csv/hf, may use any code)"
                )

    def _gguf(self) -> bool:
        """The measured artifact is a GGUF file (built here, or the user's own)."""
        return (self.quant.format if self.quant is not None else self.model.origin.FORMAT) == "gguf"


def register_configs() -> None:
    cs = ConfigStore.instance()
    # The first entry of conf/config.yaml's defaults: every group merged after it is
    # type-checked against these dataclasses, and unknown keys are rejected.
    cs.store(name="job_schema", node=JobConfig)
    # Each format's options, as the schema its presets start from (`- /quant/schema/gguf@_here_`):
    # a preset, and an override of one of its options, is type-checked against its own format.
    for cls in dict.fromkeys(registry().values()):
        cs.store(group="quant/schema", name=cls.__module__.rpartition(".")[2], node=cls)
    # Run directories are named as records name the job: ${job_label:${model},${quant},${train}}.
    if not OmegaConf.has_resolver("job_label"):
        OmegaConf.register_new_resolver("job_label", _composed_job_label)


def _composed_job_label(model: Any, quant: Any, train: Any) -> str:
    plain = {k: OmegaConf.to_container(v, resolve=True) for k, v in (("model", model), ("train", train))}
    return job_label(job_info({**plain, "quant": {"name": quant_name(quant)}}))


# Presets that once said where a job runs rather than how it quantizes, and what replaced them.
RETIRED = {
    "quant=as_is": "a model file is measured as it is from its source alone: model.source=gguf model.path=FILE.gguf, "
    "or model.source=checkpoint model.path=DIR; drop quant=as_is (and train=none)",
    "quant=hosted": "a hosted model (model.source=api, e.g. model=gpt41) is measured as served with no quant; "
    "drop quant=hosted",
}


def check_retired(overrides: Sequence[str]) -> None:
    """Before Hydra composes (it would only say the preset is missing): a retired override, with its new form."""
    for override in overrides:
        key, _, values = override.partition("=")
        for value in values.split(","):
            name = f"{key.lstrip('+~')}={value}"
            if name in RETIRED:
                raise ConfigError(f"{name} is retired: {RETIRED[name]}")


def _chosen_groups(overrides: Sequence[str]) -> dict[str, str]:
    """The groups a job's command-line overrides (Hydra's task overrides) set, each with the
    last override that set it, as Hydra applies the last (`quant=gguf_q8_0`, `train.epochs=2`);
    a deletion sets nothing."""
    out: dict[str, str] = {}
    for override in overrides:
        key = override.partition("=")[0]
        if not key.startswith("~"):
            out[key.lstrip("+").partition(".")[0]] = override
    return out


NOT_TRAINED = TrainConfig(name="none", method="none")


def _refuse_build_choices(cfg: DictConfig, source: Source, overrides: Sequence[str]) -> None:
    """A model that is not built here takes no quant or training: the composed defaults are
    dropped, and one the user chose is refused as its source refuses it, with what to do
    instead (choosing no training is what the kind does anyway)."""
    chosen = _chosen_groups(overrides)
    for group in ("quant", "train"):
        override = chosen.get(group)
        if override is None or (group == "train" and cfg.train.method == "none"):
            continue
        refusal = source.refusal(cfg.model, group, override)
        if refusal:
            raise ConfigError(refusal)


def to_job_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> JobConfig:
    """Turn a composed config into validated objects; raises ConfigError naming the fix.
    `overrides`: the job's command-line overrides, which say whether a quant or a train the
    config holds was the user's choice or the default."""
    source = source_of(cfg.model.source)  # None: an unknown one, which ModelConfig names
    cfg = cfg.copy()
    with open_dict(cfg):
        if source is not None and source.KIND == ENDPOINT:
            source.check_api(cfg.model.api and OmegaConf.to_container(cfg.model.api))
        else:
            cfg.model.api = None  # its URL and model name unset: only a hosted model has an endpoint
        if source is not None and source.KIND != BUILT:
            _refuse_build_choices(cfg, source, overrides)
            cfg.quant = None
            cfg.train = OmegaConf.structured(NOT_TRAINED)
        else:
            # the node keeps the schema its preset started from, whatever `quant.format` now says
            cfg.quant = OmegaConf.structured(quant_from_dict(OmegaConf.to_container(cfg.quant, resolve=True)))
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, JobConfig)
    return job
