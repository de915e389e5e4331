"""The job's configuration: the schema Hydra composes into, and the rules across groups.

Each group's schema lives next to the code that uses it (`models.ModelConfig`,
`formats.*` for `quant`, `hardware.HardwareConfig`, `data.config`, `train.config`,
`measure.config`, `report.config`, `runtimes.config`); `JobConfig` registers them all in
Hydra's ConfigStore, so YAML presets and command-line overrides are type-checked when the
job is composed. `quant` is the one group whose schema depends on a value, its format: it is
parsed against that format's own dataclass right after composition, before any work. Every
`__post_init__` check raises ConfigError naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from harness.data.config import DatasetConfig, LanguageConfig
from harness.errors import ConfigError, choices
from harness.formats import QuantConfig, quant_from_dict, quant_name, registry
from harness.hardware import HardwareConfig
from harness.measure.config import MeasureConfig
from harness.models import ModelConfig
from harness.record import OBJECTIVES
from harness.report.config import LoggerConfig, ReportConfig
from harness.train.config import TrainConfig


@dataclass
class PathsConfig:
    root: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    # llama.cpp's converter and gguf-py, unpacked by `make setup` from the llama-cpp-python
    # sdist into <venv>/share/llama.cpp, which is where None looks.
    llama_cpp_dir: Optional[str] = None
    # llama.cpp's command-line tools (llama-imatrix, llama-quantize, llama-bench), built by
    # `make llama-tools` from the same vendored source; None: that build, then the PATH.
    llama_cpp_bin: Optional[str] = None


@dataclass
class JobConfig:
    # MISSING, not default instances: each group is filled by its preset in conf/, and only
    # the composed result is validated (defaults alone are not a valid job).
    model: ModelConfig = MISSING
    # The format's own options dataclass (see harness.formats) once parsed.
    # Typed here as what every format has; a preset's own schema (quant/schema/<format>)
    # types its options, and `to_job_config` parses the node as its format's dataclass.
    quant: QuantConfig = MISSING
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
        hosted = self.model.source == "api"
        if hosted != self.quant.HOSTED:
            raise ConfigError(
                f"model={self.model.name} is a hosted model, measured as served: quant={self.quant.name} "
                "does not apply to it; drop the quant override for this model "
                "(sweep hosted and local models separately)"
                if hosted
                else f"quant={self.quant.name} is only for hosted models (model.source=api, e.g. model=local_server)"
            )
        if hosted and self.train.method != "none":
            raise ConfigError(
                f"model={self.model.name} is a hosted model, measured as served: train={self.train.name} "
                "does not apply to it; drop the train override for this model "
                "(sweep hosted and local models separately)"
            )
        as_given = self.quant.AS_GIVEN
        if as_given and self.model.source not in ("gguf", "local"):
            raise ConfigError(
                f"quant=as_is measures a model file as it is: it needs model.source=gguf (model.path=FILE.gguf) or "
                f"model.source=local (model.path=DIR), not model.source={self.model.source}"
            )
        if self.model.source == "gguf" and not as_given:
            raise ConfigError(
                f"model.source=gguf is measured as it is: use quant=as_is (not quant={self.quant.name}); a GGUF is "
                "not fine-tuned or requantized here"
            )
        if as_given and self.train.method != "none":
            raise ConfigError(
                f"quant=as_is measures the file as given, so train={self.train.name} does not apply: add train=none "
                "(to fine-tune, start from a full-precision checkpoint with model.source=local and another quant)"
            )
        if hosted and self.measure.decoding != "free":
            raise ConfigError(
                f"measure.decoding={self.measure.decoding} restricts the tokens a local runtime picks; a hosted model "
                "writes its answer itself: use measure.decoding=free, with the label list in its prompt and "
                "model.api.few_shot=k worked examples"
            )
        if self.dataset.kind == "synthetic":
            from harness.data.synthetic import KNOWN_LANGUAGES

            unknown = sorted(set(self.language.codes) - set(KNOWN_LANGUAGES))
            if unknown:
                raise ConfigError(
                    f"language: the synthetic dataset has no phrasings in {choices(unknown)}; it knows "
                    f"{choices(KNOWN_LANGUAGES)} (your own data, dataset=jsonl/csv/hf, may use any code)"
                )


def register_configs() -> None:
    cs = ConfigStore.instance()
    # The first entry of conf/config.yaml's defaults: every group merged after it is
    # type-checked against these dataclasses, and unknown keys are rejected.
    cs.store(name="job_schema", node=JobConfig)
    # Each format's options, as the schema its presets start from (`- /quant/schema/gguf@_here_`):
    # a preset, and an override of one of its options, is type-checked against its own format.
    for cls in dict.fromkeys(registry().values()):
        cs.store(group="quant/schema", name=cls.__module__.rpartition(".")[2], node=cls)
    # Run directories and W&B names use the variant's derived name: ${quant_name:${quant}}.
    if not OmegaConf.has_resolver("quant_name"):
        OmegaConf.register_new_resolver("quant_name", quant_name)


def to_job_config(cfg: DictConfig) -> JobConfig:
    """Turn a composed config into validated objects; raises ConfigError naming the fix."""
    # the node keeps the schema its preset started from, whatever `quant.format` now says
    quant = quant_from_dict(OmegaConf.to_container(cfg.quant, resolve=True))
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.quant = OmegaConf.structured(quant)
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, JobConfig)
    return job
