"""The `train` group's schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.extras import require

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METHODS = ("full", "lora", "qlora", "none")
# The adapter's options: they shape LoRA and QLoRA, and mean nothing to full fine-tuning.
LORA_FIELDS = ("r", "alpha", "dropout", "target_modules")


@dataclass
class TrainConfig:
    """Full fine-tuning by default, as `make run` does; the presets in conf/train/ set what
    differs for each method."""

    name: str = "full"
    method: str = "full"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 3e-4
    epochs: float = 1.0
    # > 0 caps the number of optimizer steps (overrides epochs).
    max_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 96
    # Clip the gradients' global norm (0: no clipping).
    max_grad_norm: float = 1.0
    # auto: a 16-bit autocast where the hardware computes it natively (bf16 on a GPU from
    # Ampere on and on a CPU with AMX or AVX512-BF16; fp16 on older GPUs such as the T4), else
    # fp32; fp32 / bf16 / fp16 force one.
    precision: str = "auto"
    # Score the validation split this many times over training (and at the end); the
    # adapter that scored best is the one kept. 0: no evaluation, the last adapter is kept.
    evaluations: int = 4
    # Stop once this many evaluations in a row did not improve on the best (0: never).
    patience: int = 2
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"train.method={self.method!r} is unknown; choose one of: {', '.join(METHODS)}")
        for name in ("r", "alpha", "batch_size", "grad_accum", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision={self.precision!r} is unknown; choose one of: {', '.join(PRECISIONS)}")
        if self.max_grad_norm < 0 or self.evaluations < 0 or self.patience < 0:
            raise ConfigError("train.max_grad_norm, train.evaluations and train.patience must be >= 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("train: set train.epochs > 0 or train.max_steps > 0")

    def key_inputs(self) -> dict:
        """What the trained weights depend on, for their cache key: not the preset's name or
        `force`, and for full fine-tuning not the adapter's shape (changing it must not retrain)."""
        unused = {"name", "force", *(LORA_FIELDS if self.method == "full" else ())}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}

    def check(self) -> None:
        """Seconds-long: what the method needs is installed (QLoRA's 4-bit base is bitsandbytes')."""
        if self.method == "qlora":
            require("train.method=qlora (its frozen base in 4-bit NF4)", ["bitsandbytes"], "bnb")
