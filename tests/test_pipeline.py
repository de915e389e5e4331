"""The real entry point, end to end on a tiny model: records, cache reuse, multirun,
and a failing job that does not stop the sweep."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_harness, tiny_job_overrides


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("multirun/*/*/*/record.json"))]


def test_single_job_writes_a_full_record_then_reuses_it(tiny_llama, tmp_path):
    args = tiny_job_overrides(tiny_llama, tmp_path) + [
        "quant=gguf_q8_0",
        "hardware.cpu_watts_per_core=5",
        "hydra.run.dir=" + str(tmp_path / "run1"),
    ]
    done = run_harness(args)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run1" / "record.json").read_text())
    assert record["status"] == "ok"
    m = record["metrics"]
    assert m["n_samples"] == 2 * 13  # 2 languages x 13 labels x 1 test row
    assert 0 <= m["accuracy"] <= 1 and m["decode_tokens_per_s"] > 0 and m["peak_rss_mib"] > 0
    assert m["energy_j"] is None or m["energy_method"] != "none"
    # the estimate lives in its own fields, named for its method
    assert m["energy_estimate_j_per_query"] > 0 and m["energy_estimate_method"] == "cpu_time_x_5W_per_core"
    assert m["peak_vram_mib"] is None  # no GPU here
    assert record["artifact"]["gguf_type"] == "Q8_0"
    assert record["train"]["steps"] == 2 and len(record["train"]["loss"]) == 2
    assert record["environment"]["packages"]["llama_cpp_python"]
    assert record["config"]["quant"]["name"] == "gguf_q8_0"
    predictions = Path(record["record_dir"]) / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == m["n_samples"]

    again = run_harness(args[:-1] + ["hydra.run.dir=" + str(tmp_path / "run2")])
    assert again.returncode == 0, again.stderr[-3000:]
    reused = json.loads((tmp_path / "run2" / "record.json").read_text())
    assert reused["keys"] == record["keys"] and reused["metrics"] == record["metrics"]
    assert "fine-tune" not in again.stderr  # no training the second time


def test_multirun_writes_one_record_per_job_and_a_failure_does_not_stop_it(tiny_llama, tmp_path):
    args = ["--multirun", *tiny_job_overrides(tiny_llama, tmp_path), "quant=gguf_q4km,gptq4,gguf_q8_0"]
    done = run_harness(args)
    assert done.returncode == 1  # one job failed
    records = _records(tmp_path)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert "not implemented yet" in records[1]["error"]
    assert "gptq4: NotImplementedError" in done.stdout  # the summary names the failure
    # both GGUF jobs share one fine-tuned adapter
    assert records[0]["train"]["adapter_key"] == records[2]["train"]["adapter_key"]
