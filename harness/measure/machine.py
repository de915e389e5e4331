"""Which machine measured a record, and which GPU a job uses.

A record's figures belong to the machine that measured them: its identity (CPU model and
the instruction sets that decide kernels, total RAM; the GPU's name, memory, driver and CUDA
versions) goes into the record's cache key, so a shared cache never hands one machine's
timings to another. The hostname is left out: identical nodes of a cluster share records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

# Flags that decide which kernels llama.cpp, torch and bitsandbytes run.
KERNEL_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "neon", "asimd", "sve")


def cpu_facts(cpuinfo: str) -> dict[str, Any]:
    """CPU model and kernel-relevant flags from the text of /proc/cpuinfo."""
    model, flags = "", []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = sorted(f for f in value.split() if f.startswith(KERNEL_FLAG_PREFIXES))
    return {"model": model, "flags": flags}


def local_cpu_facts() -> dict[str, Any]:
    """`cpu_facts` of the machine this process runs on (empty where there is no /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    return cpu_facts(cpuinfo.read_text() if cpuinfo.is_file() else "")


def visible_device(cuda_visible_devices: Optional[str]) -> Optional[tuple[str, Any]]:
    """The GPU a CUDA process's device 0 is, as NVML can find it: ("uuid", "GPU-...") or
    ("index", n); None where the variable hides every GPU (set, but empty: a CPU job's
    stages). CUDA numbers only the devices CUDA_VISIBLE_DEVICES lists, NVML numbers all."""
    if cuda_visible_devices is None:
        return ("index", 0)
    first = cuda_visible_devices.split(",")[0].strip()
    if not first:
        return None
    if first.startswith(("GPU-", "MIG-")):
        return ("uuid", first)
    return ("index", int(first))


def nvml_handle(pynvml):
    """NVML's handle for the GPU this process's CUDA device 0 is (after nvmlInit); LookupError
    where this process may see no GPU."""
    device = visible_device(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if device is None:
        raise LookupError("CUDA_VISIBLE_DEVICES is empty: this process sees no GPU")
    how, which = device
    if how == "uuid":
        return pynvml.nvmlDeviceGetHandleByUUID(which)
    return pynvml.nvmlDeviceGetHandleByIndex(which)


def open_nvml(nvml=None):
    """(the NVML module, the handle of the GPU this process's CUDA device 0 is), NVML
    initialised; raises what NVML raises. `nvml` defaults to pynvml (tests give another)."""
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    return nvml, nvml_handle(nvml)


def gpu_facts() -> Optional[dict[str, Any]]:
    """The GPU this process's CUDA device 0 is, as NVML describes it; None where NVML cannot
    (no driver, no library, no such device, or an NVML error on any of these reads)."""
    try:
        pynvml, handle = open_nvml()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return {
            "name": pynvml.nvmlDeviceGetName(handle),
            "uuid": pynvml.nvmlDeviceGetUUID(handle),
            "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}",
        }
    except Exception:  # NVML raises its own error family, and a missing library an OSError
        return None


def machine_identity(device: str) -> dict[str, Any]:
    """What decides a measurement's figures on this machine, for the record and its key."""
    import psutil

    gpu = gpu_facts() if device == "cuda" else None
    return {
        "cpu": local_cpu_facts(),
        "logical_cores": psutil.cpu_count(logical=True),
        "ram_gib": round(psutil.virtual_memory().total / 2**30),
        # the UUID names one card: two cards of a model share figures
        "gpu": {k: v for k, v in gpu.items() if k != "uuid"} if gpu else None,
    }


def cpu_features(flags: list[str]) -> str:
    """The instruction sets that decide a CPU's kernels, as people name them: the widest vector
    set (AVX-512, AVX2, ...; NEON or SVE on Arm) and the bf16 extensions (AVX512-BF16, AMX),
    e.g. 'AVX-512 + AVX512-BF16 + AMX'; 'no flags recorded' where there are none."""
    have = set(flags)
    widest = next(
        (
            name
            for flag, name in (
                ("avx512f", "AVX-512"),
                ("avx2", "AVX2"),
                ("avx", "AVX"),
                ("sve", "SVE"),
                ("asimd", "NEON"),
                ("neon", "NEON"),
            )
            if flag in have
        ),
        None,
    )
    extras = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")) if flag in have]
    named = ([widest] if widest else []) + extras
    return " + ".join(named) if named else ("no AVX" if flags else "no flags recorded")


def machine_label(identity: dict[str, Any]) -> str:
    """A short name for a machine, for report headings and variant names: the GPU, or the CPU
    with its cores and the instruction sets that pick its kernels."""
    gpu = identity.get("gpu")
    cpu = identity.get("cpu") or {}
    model = cpu.get("model") or "unknown CPU"
    if gpu:
        return f"{gpu['name']} ({model})"
    return f"{model}, {identity.get('logical_cores')} cores, {cpu_features(cpu.get('flags') or [])}"
