"""Where a job runs: the `hardware` group's schema and the checks that need the machine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from harness.errors import ConfigError

# Ampere (compute capability 8.0) is the first NVIDIA generation with bf16 tensor cores. Below
# it torch.cuda.is_bf16_supported() still says yes (it emulates), at a fraction of fp16's speed.
BF16_MIN_CAPABILITY = (8, 0)


@dataclass
class HardwareConfig:
    name: str = "cpu"
    device: str = "cpu"
    # Threads for every runtime alike (torch intra-op, llama.cpp n_threads); 0 = every CPU this
    # process may run on (its affinity: a Slurm job's allocation, not the node's cores).
    threads: int = 0
    # Optional: watts per busy core (package TDP / cores) for a CPU-time energy *estimate*,
    # reported apart from measured energy, where no counter can be read.
    cpu_watts_per_core: Optional[float] = None
    # What an hour of this machine costs you (cloud price or amortised hardware), for the cost
    # per million queries at its measured capacity; null: no cost figure.
    usd_per_hour: Optional[float] = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"hardware.device={self.device!r} is unknown; choose cpu or cuda")
        if self.threads < 0:
            raise ConfigError(f"hardware.threads={self.threads} must be >= 0 (0 = every CPU this job may use)")
        if self.cpu_watts_per_core is not None and self.cpu_watts_per_core <= 0:
            raise ConfigError("hardware.cpu_watts_per_core must be > 0 (or null for no estimate)")
        if self.usd_per_hour is not None and self.usd_per_hour <= 0:
            raise ConfigError("hardware.usd_per_hour must be > 0 (or null for no cost figure)")

    @property
    def threads_used(self) -> int:
        return self.threads or allowed_cpus()


def allowed_cpus() -> int:
    """How many CPUs this process may run on: its affinity (what Slurm, taskset or a cgroup
    cpuset allow), where the platform has one, else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("hardware=cuda but no CUDA device is visible; use hardware=cpu on this machine")


def child_env(device: str) -> dict[str, str]:
    """What a job's spawned stage adds to its environment. A CPU job's processes see no GPU: a
    CUDA build of llama.cpp with no layers offloaded still sends large prefill batches to the
    GPU and keeps weights in pinned host buffers, and torch would open a CUDA context; hidden
    devices make a CPU row a CPU row whatever the build."""
    return {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}


def cuda_capability() -> Optional[tuple[int, int]]:
    """The compute capability of CUDA device 0, or None where torch sees no CUDA device."""
    import torch

    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None


def gpu_half_precision(capability: tuple[int, int]) -> str:
    """The 16-bit float a GPU of this compute capability computes natively: bf16 from Ampere
    on, fp16 before it (a T4, sm75, emulates bf16)."""
    return "bf16" if tuple(capability) >= BF16_MIN_CAPABILITY else "fp16"


def gpu_half_dtype():
    """`gpu_half_precision` of CUDA device 0, as the torch dtype."""
    import torch

    return torch.bfloat16 if gpu_half_precision(cuda_capability()) == "bf16" else torch.float16
