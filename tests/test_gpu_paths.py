"""The GPU paths' logic, tested where no GPU is: what a CPU job's processes can see, NVML
failing in every place it can, the half precision a GPU's compute capability gets, GPTQ's
kernel choice and its fallback, and `make setup GPU=1`'s checks before any compiling."""

from __future__ import annotations

import os
import stat
import subprocess
from types import SimpleNamespace

import pytest

from harness.formats.gptq import MARLIN, TORCH, Kernel, choose_cuda_kernel, load_with_fallback
from harness.hardware import gpu_half_precision
from harness.isolated import run_isolated
from harness.measure.energy import EnergyMeter
from harness.measure.memory import GpuMemoryTracker
from harness.record import Record
from harness.report.records import point
from harness.train.finetune import resolve_precision

from .conftest import REPO


def cuda_visible_devices() -> str | None:
    """In the stage's process: what it was told about GPUs."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_cpu_jobs_stage_sees_no_gpu_and_a_cuda_jobs_sees_the_sweeps(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert run_isolated("probe", cuda_visible_devices, {}, tmp_path / "cpu", 120, "t", "cpu") == ""
    assert run_isolated("probe", cuda_visible_devices, {}, tmp_path / "cuda", 120, "t", "cuda") == "1"


class FakeNVML:
    """An NVML whose calls fail where told to, raising NVML's own error type (the library is
    not on this machine, so these are the only NVML answers a test here can get)."""

    def __init__(self, used_mib: list[int], processes=None, fail_after: int | None = None, energy_fails=False):
        import pynvml

        self.NVMLError = pynvml.NVMLError
        self.used, self.processes, self.fail_after, self.energy_fails = (
            list(used_mib),
            processes,
            fail_after,
            energy_fails,
        )
        self.reads = 0
        self.energy_mj = 1000

    def _error(self):
        return self.NVMLError(999)  # NVML_ERROR_UNKNOWN

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise self._error()
        return SimpleNamespace(used=self.used[min(self.reads, len(self.used)) - 1] * 2**20)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if isinstance(self.processes, Exception):
            raise self.processes
        return self.processes or []

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy_fails and self.energy_mj > 1000:
            raise self._error()
        self.energy_mj += 2500
        return self.energy_mj


def tracked(nvml, monkeypatch) -> dict:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    tracker = GpuMemoryTracker("cuda", interval_s=3600, nvml=nvml)  # samples at enter and exit only
    with tracker:
        pass
    return tracker.report()


def test_vram_is_the_processs_own_where_nvml_lists_it(monkeypatch):
    me = SimpleNamespace(pid=os.getpid(), usedGpuMemory=300 * 2**20)
    other = SimpleNamespace(pid=1, usedGpuMemory=9000 * 2**20)
    report = tracked(FakeNVML([1000, 1400], [other, me]), monkeypatch)
    assert (report.peak_vram_mib, report.vram_method, report.vram_note) == (300, "nvml_process", None)
    assert report.peak_device_vram_mib == 1400


def test_vram_falls_back_to_the_devices_use_labelled_where_the_pid_is_not_nvmls(monkeypatch):
    """In a container's PID namespace NVML lists host PIDs: this process is not among them."""
    host_pid = SimpleNamespace(pid=os.getpid() + 100_000, usedGpuMemory=300 * 2**20)
    report = tracked(FakeNVML([1000, 1400], [host_pid]), monkeypatch)
    assert (report.peak_vram_mib, report.vram_method) == (1400, "nvml_device_used")
    assert "PID namespace" in report.vram_note


def test_nvml_errors_leave_figures_unmeasured_with_the_reason_and_never_fail(monkeypatch):
    import pynvml

    no_processes = tracked(FakeNVML([800], pynvml.NVMLError(3)), monkeypatch)  # NOT_SUPPORTED (vGPU, MIG)
    assert (no_processes.peak_vram_mib, no_processes.vram_method) == (800, "nvml_device_used")
    assert "no per-process memory" in no_processes.vram_note

    failing = tracked(FakeNVML([800], [], fail_after=1), monkeypatch)  # answers once, then fails
    assert failing.peak_vram_mib is None and failing.peak_device_vram_mib is None
    assert failing.vram_method is None and "NVML failed while sampling" in failing.vram_note

    meter = EnergyMeter("cuda", nvml=FakeNVML([800], energy_fails=True))
    with meter:
        pass
    assert meter.reading.joules is None and "at the window's end" in meter.reading.reason
    working = EnergyMeter("cuda", nvml=FakeNVML([800]))
    with working:
        pass
    assert working.reading.joules == 2.5 and working.reading.method == "nvml_total_energy"


def test_without_nvml_a_cuda_job_measures_no_gpu_figure_and_a_cpu_job_asks_for_none(monkeypatch):
    """Where there is no NVML library, the real pynvml raises, and the measurement goes on."""
    from harness.measure.machine import gpu_facts

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if gpu_facts() is not None:
        pytest.skip("this machine has NVML and a GPU: the test is of one without")
    with GpuMemoryTracker("cuda") as vram, EnergyMeter("cuda") as energy:
        pass
    assert vram.report().peak_vram_mib is None and "NVML unavailable" in vram.report().vram_note
    assert energy.reading.joules is None and "NVML energy counter unreadable" in energy.reading.reason
    with GpuMemoryTracker("cpu") as cpu_job:
        pass
    assert cpu_job.report().peak_vram_mib is None and cpu_job.report().vram_note == "a CPU job: no GPU memory"


def test_a_gpu_row_without_vram_is_unmeasured_in_the_report_never_its_host_rss():
    def record(vram, method):
        return Record.from_json(
            dict(
                job={"quant": "fp16", "hardware": "cuda"},
                config={"hardware": {"device": "cuda"}},
                metrics={"peak_rss_mib": 2000.0, "peak_vram_mib": vram, "vram_method": method},
            )
        )

    unmeasured = point(record(None, None), [])
    assert unmeasured.value("peak_memory_mib") is None and unmeasured.memory_kind == "VRAM unmeasured"
    device = point(record(1400.0, "nvml_device_used"), [])
    assert device.value("peak_memory_mib") == 1400 and device.memory_kind == "device VRAM (all processes)"
    assert point(record(300.0, "nvml_process"), []).memory_kind == "VRAM"


@pytest.mark.parametrize("capability, half", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_a_gpu_trains_and_computes_in_the_half_precision_it_has_natively(capability, half):
    """A T4 (sm75) reports bf16 as supported, through emulation: it gets fp16."""
    assert gpu_half_precision(capability) == half
    assert resolve_precision("auto", "cuda", [], capability) == half
    assert resolve_precision("fp32", "cuda", [], capability) == "fp32"


def test_gptq_on_a_gpu_asks_for_marlin_and_falls_back_to_torch_with_the_reason():
    def builds():
        return None

    def no_nvcc():
        return "RuntimeError('nvcc not found')"

    def never():
        raise AssertionError("no build is tried where Marlin cannot apply")

    chosen = choose_cuda_kernel(4, (9, 0), builds)
    assert chosen.backend == MARLIN and chosen.fallback_reason is None and chosen.setup_s >= 0
    broken = choose_cuda_kernel(4, (8, 6), no_nvcc)
    assert broken.backend == TORCH and "nvcc not found" in broken.fallback_reason
    assert "compute capability 7.5" in choose_cuda_kernel(4, (7, 0), never).fallback_reason
    assert "not 3" in choose_cuda_kernel(3, (9, 0), never).fallback_reason

    tried = []

    def load(backend):
        tried.append(backend)
        if backend == MARLIN:
            raise ValueError("Marlin packed dimensions must be divisible")
        return f"model on {backend}"

    kernel = Kernel(MARLIN, 1.5)
    assert load_with_fallback(kernel, load) == "model on gptq_torch" and tried == [MARLIN, TORCH]
    assert kernel.backend == TORCH and "divisible" in kernel.fallback_reason
    with pytest.raises(ValueError):  # the torch kernel failing has nothing left to fall back to
        load_with_fallback(Kernel(TORCH), lambda backend: load(MARLIN))


def make_cuda_check(tmp_path, **variables) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "cuda-check", "GPU=1", *(f"{k}={v}" for k, v in variables.items())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gpu_setup_checks_nvcc_and_the_architecture_before_building(tmp_path):
    missing = make_cuda_check(tmp_path, NVCC=tmp_path / "no-nvcc", CUDA_ARCH=75)
    assert missing.returncode != 0 and "needs nvcc" in missing.stderr and "GPU=0" in missing.stderr

    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4'\necho 'Build cuda_12.4.r12.4/compiler'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    no_arch = make_cuda_check(tmp_path, NVCC=nvcc, CUDA_ARCH="")
    assert no_arch.returncode != 0 and "set CUDA_ARCH" in no_arch.stderr

    ready = make_cuda_check(tmp_path, NVCC=nvcc, CUDA_ARCH=75, BUILD_JOBS=3)
    assert ready.returncode == 0, ready.stderr
    assert ready.stdout.strip() == "CUDA build: Build cuda_12.4.r12.4/compiler, architecture 75, 3 parallel jobs"
