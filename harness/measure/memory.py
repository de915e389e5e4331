"""Peak resident memory of this process, sampled from a background thread.

The kernel's own high-water mark (ru_maxrss) cannot be reset between phases, so a sampler
reports the peak of the window it watched, including memory that native runtimes allocate
outside Python."""

from __future__ import annotations

import threading

import psutil


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
