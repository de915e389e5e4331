"""Energy of a measured window, from hardware counters only.

NVIDIA GPUs: NVML's total-energy counter (millijoules since driver load). CPUs: RAPL
through Linux powercap (microjoules, wrapping at max_energy_range_uj). Where neither is
readable the result is None with the reason: an unmeasured figure is never reported as
a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

POWERCAP = Path("/sys/class/powercap")


@dataclass
class EnergyReading:
    joules: Optional[float]
    method: str
    reason: Optional[str] = None


def _rapl_packages() -> list[Path]:
    """Top-level RAPL package domains (intel-rapl:N), whose counters include the cores."""
    if not POWERCAP.is_dir():
        return []
    return sorted(p for p in POWERCAP.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").is_file())


def _read_uj(domain: Path) -> int:
    return int((domain / "energy_uj").read_text())


def rapl_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Counter difference allowing for one wrap-around."""
    return after - before if after >= before else after + max_range_uj - before


class EnergyMeter:
    """Context manager around a measured window; `.reading` after it closes."""

    def __init__(self, device: str, nvml=None):
        self.device = device
        self._nvml = nvml  # the pynvml module unless given (tests give another NVML)
        self.reading = EnergyReading(None, "none")

    def __enter__(self) -> "EnergyMeter":
        self._start = self._snapshot()
        return self

    def _snapshot(self):
        if self.device == "cuda":
            try:
                from harness.measure.machine import open_nvml

                nvml, handle = open_nvml(self._nvml)
                return ("nvml", nvml, handle, nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            except Exception as exc:  # NVML raises its own error family; any means unreadable
                return ("none", f"NVML energy counter unreadable: {exc!r}")
        domains = _rapl_packages()
        if not domains:
            return ("none", "no RAPL counters under /sys/class/powercap (common in VMs); CPU energy not measured")
        try:
            return ("rapl", domains, [_read_uj(d) for d in domains])
        except PermissionError:
            return ("none", "RAPL counters exist but are not readable (root needed); CPU energy not measured")

    def __exit__(self, *exc: object) -> None:
        kind = self._start[0]
        if kind == "nvml":
            _, nvml, handle, before_mj = self._start
            try:
                after_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except Exception as exc:  # a counter that stopped answering measured nothing
                self.reading = EnergyReading(None, "none", f"NVML energy counter failed at the window's end: {exc!r}")
            else:
                self.reading = EnergyReading((after_mj - before_mj) / 1000, "nvml_total_energy")
        elif kind == "rapl":
            _, domains, before = self._start
            total_uj = 0
            for domain, b in zip(domains, before):
                max_range = int((domain / "max_energy_range_uj").read_text())
                total_uj += rapl_delta_uj(b, _read_uj(domain), max_range)
            self.reading = EnergyReading(total_uj / 1e6, "rapl_powercap")
        else:
            self.reading = EnergyReading(None, "none", self._start[1])


def cpu_time_estimate_j(cpu_seconds: float, watts_per_core: float) -> float:
    """An estimate, not a measurement: busy CPU-seconds times a per-core power figure
    (e.g. the package TDP divided by its cores), for machines without RAPL."""
    return cpu_seconds * watts_per_core
