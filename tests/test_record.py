"""The record's types against real `record.json` files (tests/records): a record reads into
typed sections and writes back the file it was, byte for byte, whichever code wrote it.

The files are records the harness wrote (their temporary paths renamed): a GGUF job measured
in process, the same job served (measure.serve=server), a failed hosted job, and the GGUF job
as measurement version 4 wrote it, before records kept their stages' keys, the runtime's name,
the decoding, the load curve and the per-phase VRAM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.record import Cpu, JobInfo, LoadLevel, Metrics, Record, ServedRate
from harness.store import write_json_atomic

RECORDS = Path(__file__).parent / "records"
CURRENT = ("gguf_q8_0.json", "served_gguf_q8_0.json", "failed_endpoint.json")


@pytest.mark.parametrize("name", CURRENT)
def test_a_record_reads_and_writes_back_byte_for_byte(name, tmp_path):
    path = RECORDS / name
    record = Record.read(path)
    assert record.to_json() == json.loads(path.read_text())
    write_json_atomic(tmp_path / name, record.to_json())
    assert (tmp_path / name).read_bytes() == path.read_bytes()


def test_an_older_record_writes_back_what_it_held_and_an_empty_keys_block():
    """What it lacked stays lacking (a runtime without a name, metrics without the figures
    added since, a job without its decoding); the record's own `keys`, which every record has
    had since, is written empty, as the code before these types wrote it."""
    data = json.loads((RECORDS / "older_gguf_q8_0.json").read_text())
    record = Record.from_json(data)
    assert record.to_json() == {**data, "keys": {}}
    assert "name" in record.runtime.absent and record.runtime.name is None
    assert record.metrics.latency.load_curve == [] and "load_curve" in record.metrics.latency.absent
    assert record.job.decoding is None and record.keys.record is None and record.served is None


def test_sections_are_typed_and_name_what_the_report_reads():
    record = Record.read(RECORDS / "served_gguf_q8_0.json")
    assert isinstance(record.job, JobInfo) and record.job.languages == ["en", "hr"]
    assert isinstance(record.metrics, Metrics) and record.metrics.accuracy.n_samples == 26
    assert all(isinstance(level, LoadLevel) for level in record.metrics.latency.load_curve)
    assert record.served is not None and all(isinstance(r, ServedRate) for r in record.served.rates)
    assert record.machine is not None and isinstance(record.machine.cpu, Cpu) and "avx2" in record.machine.cpu.flags
    assert record.runtime.name == "llama_cpp" and record.keys.record == "4c9c7c247a6727bc"
    # every key of these sections is a field: only a format's own facts, the other stages' keys,
    # the fine-tune's facts and the host's are kept untyped; an in-process runtime has no endpoint
    for section in (record.job, record.machine, record.served, *record.metrics.sections()):
        assert section.other == {} and section.absent == frozenset(), type(section).__name__
    assert record.metrics.other == {} and record.runtime.other == {}
    assert record.runtime.absent == {"base_url", "model_name"}
    assert set(record.artifact.other) == {"bits", "gguf_type", "imatrix", "n_params"}


def test_a_renamed_figure_is_kept_as_read():
    data = json.loads((RECORDS / "gguf_q8_0.json").read_text())
    data["metrics"]["peak_rss_mb"] = 90.0
    assert Record.from_json(data).to_json() == data


def test_a_served_section_without_a_field_added_since_reads_with_it_absent():
    data = json.loads((RECORDS / "served_gguf_q8_0.json").read_text())
    del data["served"]["server_peak_rss_mib"], data["served"]["rates"][0]["goodput"]
    record = Record.from_json(data)
    assert record.served is not None and record.served.server_peak_rss_mib is None
    assert "server_peak_rss_mib" in record.served.absent and "goodput" in record.served.rates[0].absent
    assert record.to_json() == data


def test_the_record_imports_nothing_of_the_harness():
    code = "import sys, harness.record; print(sorted(m for m in sys.modules if m.startswith('harness.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['harness.record']"
