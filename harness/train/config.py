"""The `train` group's schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import ConfigError


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


