"""Peak memory of a measured window, sampled from a background thread: this process's resident
memory, and on a CUDA job its GPU's memory.

The kernel's own high-water mark (ru_maxrss) cannot be reset between phases, so a sampler
reports the peak of the window it watched, including memory that native runtimes allocate
outside Python."""

from __future__ import annotations

import os
import sys
import threading
from typing import Optional

import psutil

from harness.measure.machine import open_nvml
from harness.record import Memory


class PeakRSSSampler:
    """This process's peak RSS over a window; another process's (a server's) given its `pid`."""

    def __init__(self, interval_s: float = 0.02, pid: Optional[int] = None):
        self.interval_s = interval_s
        self.process = psutil.Process(pid)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            rss = self.process.memory_info().rss
        except psutil.NoSuchProcess:  # a watched server that ended (crashed): its peak so far stands
            return
        self.peak_bytes = max(self.peak_bytes, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "PeakRSSSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def _cuda_driven_by_torch():
    """torch.cuda where torch drove a GPU in this process, else None (torch is never imported
    for this: that would weigh on the footprint)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def torch_cuda_peaks() -> tuple[Optional[int], Optional[int]]:
    """torch's peak allocated and reserved bytes since its last reset (None where torch drove
    no GPU here)."""
    cuda = _cuda_driven_by_torch()
    return (cuda.max_memory_allocated(), cuda.max_memory_reserved()) if cuda else (None, None)


class GpuMemoryTracker:
    """Peak VRAM of a CUDA job's window, on the GPU its CUDA device 0 is, sampled from NVML;
    and torch's own peaks over the same window, read when it closes.

    The VRAM figure is this process's own use where NVML lists this process. Inside a
    container's PID namespace it cannot (NVML reports host PIDs): then the figure is the
    device's used memory, which counts every process on the GPU, and `vram_method` says so.
    An NVML error never fails a measurement: the figure is unmeasured and the reason kept.
    A CPU job has no VRAM figure at all."""

    def __init__(self, device: str, interval_s: float = 0.05, nvml=None):
        self.device = device
        self.interval_s = interval_s
        self.device_peak_bytes: Optional[int] = None
        self.device_before_bytes: Optional[int] = None
        self.process_peak_bytes: Optional[int] = None
        self.process_reason: Optional[str] = None
        self.unmeasured_reason: Optional[str] = None if device == "cuda" else "a CPU job: no GPU memory"
        self.torch_peaks: tuple[Optional[int], Optional[int]] = (None, None)
        self._nvml = nvml
        self._handle = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> bool:
        """One reading; False once NVML has failed (the figures so far are dropped)."""
        nvml, pid = self._nvml, os.getpid()
        try:
            used = nvml.nvmlDeviceGetMemoryInfo(self._handle).used
        except Exception as exc:  # NVML's error family; a figure with a gap is no peak
            self.device_peak_bytes = self.process_peak_bytes = None
            self.unmeasured_reason = f"NVML failed while sampling: {exc!r}"
            return False
        if self.device_before_bytes is None:
            self.device_before_bytes = used
        self.device_peak_bytes = max(self.device_peak_bytes or 0, used)
        if self.process_reason is None:
            try:
                mine = [
                    p.usedGpuMemory
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
                    if p.pid == pid and p.usedGpuMemory is not None
                ]
            except Exception as exc:  # not supported on some vGPU and MIG setups
                self.process_peak_bytes = None
                self.process_reason = f"NVML gave no per-process memory ({exc!r})"
            else:
                if mine:
                    self.process_peak_bytes = max(self.process_peak_bytes or 0, *mine)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample():
                return

    def __enter__(self) -> "GpuMemoryTracker":
        if self.device != "cuda":
            return self
        if cuda := _cuda_driven_by_torch():
            cuda.reset_peak_memory_stats()
        try:
            self._nvml, self._handle = open_nvml(self._nvml)
        except Exception as exc:  # no driver, no library, no such device
            self.unmeasured_reason = f"NVML unavailable: {exc!r}"
            return self
        if self._sample():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.torch_peaks = torch_cuda_peaks()
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> Memory:
        """The window's VRAM figures, as the record's memory section holds them (its RSS ones unset)."""

        def mib(value: Optional[int]) -> Optional[float]:
            return None if value is None else value / 2**20

        if self.process_peak_bytes is not None:
            peak, method = self.process_peak_bytes, "nvml_process"
        elif self.device_peak_bytes is not None:
            # the process was never listed as NVML's (PID namespace) or NVML lists none
            peak, method = self.device_peak_bytes, "nvml_device_used"
            self.process_reason = self.process_reason or (
                "this process's PID is not among NVML's (a container's PID namespace: NVML reports host PIDs)"
            )
        else:
            peak, method = None, None
        return Memory(
            peak_vram_mib=mib(peak),
            vram_method=method,
            vram_note=self.unmeasured_reason
            if peak is None
            else (self.process_reason if method == "nvml_device_used" else None),
            peak_device_vram_mib=mib(self.device_peak_bytes),
            device_vram_before_mib=mib(self.device_before_bytes),
            torch_peak_allocated_mib=mib(self.torch_peaks[0]),
            torch_peak_reserved_mib=mib(self.torch_peaks[1]),
        )
