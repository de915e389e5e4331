"""Records belong to a machine and a measurement-code version: what goes into their keys, and
that a report never compares figures from two machines as if they were one."""

from __future__ import annotations

import dataclasses

from harness.config import register_configs
from harness.measure.machine import cpu_facts, machine_identity, visible_device
from harness.record import MEASURE_VERSION, Record
from harness.report.records import by_hardware
from harness.targets import record_key

from .test_config import compose_job

register_configs()
XEON = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu sse4_2 avx2 avx512f amx_tile fma\n"
)
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu sse4_2 avx2 avx512f fma\n"


def test_cpu_facts_keep_the_model_and_the_flags_that_pick_kernels():
    assert cpu_facts(XEON) == {
        "model": "Intel(R) Xeon(R) Platinum 8480C",
        "flags": ["amx_tile", "avx2", "avx512f", "fma", "sse4_2"],
    }


def test_this_machine_has_an_identity_without_its_hostname():
    identity = machine_identity("cpu")
    assert identity["cpu"]["model"] and identity["logical_cores"] >= 1 and identity["gpu"] is None
    assert "hostname" not in identity


def test_a_record_is_reused_only_on_the_same_machine_and_measurement_version():
    job = compose_job([])
    here = {"cpu": cpu_facts(XEON), "logical_cores": 2, "ram_gib": 24, "gpu": None}
    there = {**here, "cpu": cpu_facts(EPYC)}
    key = record_key("artifact", "data", job, 2, "system", here)
    assert record_key("artifact", "data", job, 2, "system", dict(here)) == key  # same machine: reused
    assert record_key("artifact", "data", job, 2, "system", there) != key  # another CPU: measured again
    assert record_key("artifact", "data", job, 2, "system", {**here, "ram_gib": 64}) != key
    assert record_key("artifact", "data", job, 2, "system", here, version=MEASURE_VERSION + 1) != key
    # the price and the latency objective are the report's: changing them re-measures nothing
    repriced = dataclasses.replace(
        job,
        hardware=dataclasses.replace(job.hardware, usd_per_hour=3.0),
        measure=dataclasses.replace(job.measure, slo_p95_ms=50.0),
    )
    assert record_key("artifact", "data", repriced, 2, "system", here) == key


def test_nvml_watches_the_gpu_cuda_uses():
    assert visible_device(None) == ("index", 0)
    assert visible_device("3,1") == ("index", 3)
    assert visible_device("GPU-8f0a2b6c-1111-2222-3333-444455556666") == (
        "uuid",
        "GPU-8f0a2b6c-1111-2222-3333-444455556666",
    )
    assert visible_device("") is None  # a CPU job's stage: no GPU to watch, not GPU 0


def test_figures_from_two_machines_are_never_one_comparison():
    def record(cpu, key):
        return Record(
            job={"hardware": "cpu", "quant": "gguf_q4km"},
            keys={"record": key},
            machine={"cpu": cpu_facts(cpu), "logical_cores": 2, "ram_gib": 24, "gpu": None},
        )

    groups = by_hardware([record(XEON, "a"), record(EPYC, "b"), record(XEON, "c")])
    assert sorted(groups) == ["cpu on AMD EPYC 9654, 2 cores", "cpu on Intel(R) Xeon(R) Platinum 8480C, 2 cores"]
    assert len(by_hardware([record(XEON, "a"), record(XEON, "c")])["cpu"]) == 2
