"""Where a job runs: the `hardware` group's schema and the checks that need the machine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from harness.errors import ConfigError


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

    @property
    def threads_used(self) -> int:
        return self.threads or os.cpu_count() or 1


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware=cuda but no CUDA device is visible; use hardware=cpu on this machine")
