"""Peak resident memory of this process, sampled from a background thread.

The kernel's own high-water mark (ru_maxrss) cannot be reset between phases, so a sampler
reports the peak of the window it watched, including memory that native runtimes allocate
outside Python."""

from __future__ import annotations

import sys
import threading

import psutil

from harness.measure.machine import nvml_handle


class PeakRSSSampler:
    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss)

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


class GpuMemoryTracker:
    """Peak VRAM on the GPU this process uses (CUDA_VISIBLE_DEVICES honoured): NVML's device-used and this process's figures
    (sampled), plus torch's own peak allocated / reserved when torch drove the GPU. On a
    machine without NVML every figure is None."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.device_peak_bytes: int | None = None
        self.process_peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._handle = None

    def _sample(self) -> None:
        import os

        import pynvml

        used = pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
        self.device_peak_bytes = max(self.device_peak_bytes or 0, used)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                self.process_peak_bytes = max(self.process_peak_bytes or 0, proc.usedGpuMemory)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "GpuMemoryTracker":
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = nvml_handle(pynvml)
        except Exception:  # no driver or no GPU: nothing to track
            return self
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is None:
            return
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, float | None]:
        def mib(value: int | None) -> float | None:
            return None if value is None else value / 2**20

        torch_allocated = torch_reserved = None
        # only when the runtime brought torch: importing it here would weigh on the footprint
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch_allocated = torch.cuda.max_memory_allocated()
            torch_reserved = torch.cuda.max_memory_reserved()
        return {
            "peak_vram_mib": mib(self.process_peak_bytes),
            "peak_device_vram_mib": mib(self.device_peak_bytes),
            "torch_peak_allocated_mib": mib(torch_allocated),
            "torch_peak_reserved_mib": mib(torch_reserved),
        }
