"""The schemas of the report's two config sections: `logger` (W&B) and `report` (how a sweep's
report judges its variants)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from harness.errors import ConfigError


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
            raise ConfigError(
                f"logger.mode={self.mode!r} is unknown; choose offline, online or disabled (as WANDB_MODE)"
            )


@dataclass
class ReportConfig:
    """The `report` section of a job's config: how a sweep's report judges its variants."""

    # The variant the others are compared with, as the report names it (e.g. fp32); None: the
    # largest artifact, the unquantized one where there is one.
    baseline: Optional[str] = None
    # The gate, on the 95% interval of a variant's accuracy relative to the baseline's, overall
    # and in every language: pass when its lower bound is at least this, fail when its upper
    # bound is below it (shown worse), inconclusive when it straddles it.
    min_relative_accuracy: float = 0.99

    def __post_init__(self) -> None:
        if not 0 < self.min_relative_accuracy <= 1.5:
            raise ConfigError(
                f"report.min_relative_accuracy={self.min_relative_accuracy} must be in (0, 1.5]: "
                "e.g. 0.99 for 99% of the baseline's accuracy"
            )
