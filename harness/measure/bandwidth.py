"""The memory bandwidth of the device a job runs on, measured once per machine: the ceiling
that decoding one token at a time runs against (every weight is read for each token), so a
variant's decode speed can be read as a share of what the memory allows.

CPU: `threads` threads each copy their own 256 MiB buffer (numpy releases the GIL while it
copies), best of five rounds; bytes read plus bytes written per second, as STREAM's copy
counts them. GPU: a device-to-device copy of 1 GiB through torch, best of five.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import stages
from harness.store import read_json, write_json_atomic

BUFFER_MIB = 256
ROUNDS = 5


def cpu_copy_gb_per_s(threads: int, buffer_mib: int = BUFFER_MIB, rounds: int = ROUNDS) -> float:
    import numpy as np

    sources = [np.ones(buffer_mib * 2**20 // 8) for _ in range(threads)]
    targets = [np.empty_like(s) for s in sources]
    with ThreadPoolExecutor(threads) as pool:

        def copy_all() -> float:
            t0 = time.perf_counter()
            list(pool.map(lambda pair: np.copyto(pair[1], pair[0]), zip(sources, targets)))
            return time.perf_counter() - t0

        copy_all()  # pages the targets in: not counted
        best = min(copy_all() for _ in range(rounds))
    return 2 * threads * buffer_mib * 2**20 / best / 1e9


def gpu_copy_gb_per_s(buffer_mib: int = 1024, rounds: int = ROUNDS) -> float:
    import torch

    source = torch.ones(buffer_mib * 2**20 // 4, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * buffer_mib * 2**20 / best / 1e9


def memory_bandwidth(cache_root: Path, machine: dict, device: str, threads: int, timeout_s: float, lock: Path) -> dict:
    """{"gb_per_s", "method"} for this machine and device, measured once and cached under the
    machine's identity (in a spawned process, so the measurement's buffers leave nothing behind),
    holding the machine's measurement lock `lock`, as every measurement does."""
    from harness.isolated import isolated_build
    from harness.measure.window import exclusive_window

    copy = isolated_build("bandwidth", _measure, {"device": device, "threads": threads}, timeout_s, device)

    def build(out: Path) -> None:
        with exclusive_window(lock):
            copy(out)

    return read_json(stages.bandwidth(machine, device, threads).cached(cache_root, build) / "bandwidth.json")


def _measure(device: str, threads: int, out: Path) -> None:
    if device == "cuda":
        figure = {"gb_per_s": gpu_copy_gb_per_s(), "method": "torch device-to-device copy, 1 GiB, best of 5"}
    else:
        figure = {
            "gb_per_s": cpu_copy_gb_per_s(threads),
            "method": f"numpy copy, {threads} threads x {BUFFER_MIB} MiB, best of {ROUNDS}",
        }
    write_json_atomic(out / "bandwidth.json", figure)
