"""Records belong to a machine and a measurement-code version: what goes into their keys, and
that a report never compares figures from two machines as if they were one."""

from __future__ import annotations

import dataclasses

from harness.config import register_configs
from harness.measure.machine import cpu_facts, cpu_features, machine_identity, visible_device
from harness.record import MEASURE_VERSION, Record
from harness.report.records import by_hardware
from harness.targets import record_stage

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


def test_the_instruction_sets_that_pick_kernels_are_named_as_people_name_them():
    assert cpu_features(["avx", "avx2", "fma", "sse4_2"]) == "AVX2"
    assert cpu_features(["avx2", "avx512_bf16", "avx512f"]) == "AVX-512 + AVX512-BF16"
    assert cpu_features(["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f"]) == "AVX-512 + AVX512-BF16 + AMX"
    assert cpu_features(["asimd", "sve"]) == "SVE" and cpu_features(["asimd"]) == "NEON"
    assert cpu_features([]) == "no flags recorded"


def test_this_machine_has_an_identity_without_its_hostname():
    identity = machine_identity("cpu")
    assert identity["cpu"]["model"] and identity["logical_cores"] >= 1 and identity["gpu"] is None
    assert "hostname" not in identity


def test_a_record_is_reused_only_on_the_same_machine_and_measurement_version():
    job = compose_job([])
    here = {"cpu": cpu_facts(XEON), "logical_cores": 2, "ram_gib": 24, "gpu": None}
    there = {**here, "cpu": cpu_facts(EPYC)}
    key = record_stage("artifact", "data", job, 2, "system", here).key
    assert record_stage("artifact", "data", job, 2, "system", dict(here)).key == key  # same machine: reused
    assert record_stage("artifact", "data", job, 2, "system", there).key != key  # another CPU: measured again
    assert record_stage("artifact", "data", job, 2, "system", {**here, "ram_gib": 64}).key != key
    assert record_stage("artifact", "data", job, 2, "system", here, version=MEASURE_VERSION + 1).key != key
    # the price and the latency objective are the report's: changing them re-measures nothing
    repriced = dataclasses.replace(
        job,
        hardware=dataclasses.replace(job.hardware, usd_per_hour=3.0),
        measure=dataclasses.replace(job.measure, slo_p95_ms=50.0),
    )
    assert record_stage("artifact", "data", repriced, 2, "system", here).key == key


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
        return Record.from_json(
            dict(
                job={"hardware": "cpu", "quant": "gguf_q4km"},
                keys={"record": key},
                machine={"cpu": cpu_facts(cpu), "logical_cores": 2, "ram_gib": 24, "gpu": None},
            )
        )

    groups = by_hardware([record(XEON, "a"), record(EPYC, "b"), record(XEON, "c")])
    assert sorted(groups) == [
        "cpu on AMD EPYC 9654, 2 cores, AVX-512",
        "cpu on Intel(R) Xeon(R) Platinum 8480C, 2 cores, AVX-512 + AMX",
    ]
    assert len(by_hardware([record(XEON, "a"), record(XEON, "c")])["cpu"]) == 2


def test_one_variant_measured_on_two_machines_is_two_variants_never_paired(tuned_cache, tmp_path, capsys):
    """A real record, and the same one as a second machine (AVX-512 + AVX512-BF16 instead of
    this one's flags) would have written it: same job, same answers, another machine."""
    import json
    import shutil

    from harness.report import results
    from harness.report.__main__ import main as report_main
    from harness.report.config import ReportConfig
    from harness.report.records import collect, points

    (real,) = [p for p in (tuned_cache / "records").iterdir() if p.is_dir() and not p.name.startswith(".")]
    here_dir, there_dir = tmp_path / "laptop" / "0_job", tmp_path / "server" / "0_job"
    shutil.copytree(real, here_dir)
    shutil.copytree(real, there_dir)
    record = json.loads((there_dir / "record.json").read_text())
    server = cpu_facts("model name\t: AMD EPYC 9654\nflags\t\t: avx2 avx512f avx512_bf16 fma\n")
    record["machine"] = {**record["machine"], "cpu": server}
    record["environment"]["cpu"] = {**record["environment"]["cpu"], **server}
    record["keys"]["record"] = "another-machines-key"  # the machine is part of a record's key
    record["record_dir"] = str(there_dir)
    (there_dir / "record.json").write_text(json.dumps(record))
    for job_dir in (here_dir, there_dir):
        data = json.loads((job_dir / "record.json").read_text())
        (job_dir / "record.json").write_text(json.dumps({**data, "record_dir": str(job_dir)}))

    records = collect([tmp_path / "laptop", tmp_path / "server"])
    names = [p.variant for p in points(records)]
    assert len(set(names)) == 2 and all(" on " in n for n in names)
    assert any(n.endswith("AMD EPYC 9654, 2 cores, AVX-512 + AVX512-BF16") for n in names)

    assert report_main([str(tmp_path / "laptop"), str(tmp_path / "server"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    # one section per machine, each variant the baseline of its own: nothing paired across
    assert md.count("## cpu on ") == 2 and "fixed / broken" in md
    assert not any(f"| {verdict} |" in md for verdict in ("indistinguishable", "better", "worse"))

    rows = results.rows_from_records(records, "make run", ReportConfig())
    page = results.page("two machines", rows, "two.csv", None)
    assert "avx512_bf16" in page and f"training precision {record['train']['precision']}" in page
    assert [r["train_precision"] for r in rows] == [record["train"]["precision"]] * 2
