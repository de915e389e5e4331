"""The real entry point, end to end on a tiny model: records, cache reuse, multirun,
and a failing job that does not stop the sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_harness, tiny_job_overrides, wandb_history, wandb_run_records


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("multirun/*/*/*/record.json"))]


def test_single_job_writes_a_full_record_then_reuses_it(tiny_llama, seeded):
    # from the tiny job's fine-tune (`tuned_cache`, a whole job with its training, run once)
    tmp_path = seeded
    args = tiny_job_overrides(tiny_llama, tmp_path) + [
        "quant=gguf_q8_0",
        "hardware.cpu_watts_per_core=5",
        "hydra.run.dir=" + str(tmp_path / "run1"),
    ]
    done = run_harness(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchao" not in done.stdout + done.stderr  # known-harmless notices stay quiet
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
    assert record["artifact"]["weights_origin"] == f"{tiny_llama} (local)"
    assert record["train"]["steps"] == 2 and len(record["train"]["loss"]) == 2
    assert record["environment"]["packages"]["llama_cpp_python"]
    # the measuring process held llama.cpp and nothing heavier: its footprint is the runtime's
    assert record["runtime"]["process_held"] == ["llama_cpp"]
    assert 0 < m["rss_before_load_mib"] < m["peak_rss_mib"]
    assert m["peak_rss_over_baseline_mib"] == m["peak_rss_mib"] - m["rss_before_load_mib"]
    assert record["machine"]["cpu"]["model"] and record["measure_version"] >= 2
    assert record["config"]["quant"]["name"] == "gguf_q8_0"
    predictions = Path(record["record_dir"]) / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == m["n_samples"]

    again = run_harness(args[:-1] + ["hydra.run.dir=" + str(tmp_path / "run2")])
    assert again.returncode == 0, again.stderr[-3000:]
    reused = json.loads((tmp_path / "run2" / "record.json").read_text())
    assert reused["keys"] == record["keys"] and reused["metrics"] == record["metrics"]
    assert "fine-tune" not in again.stderr  # the record reused: nothing trained or measured again


def test_multirun_writes_one_record_per_job_and_a_failure_does_not_stop_it(tiny_llama, seeded):
    # a llama.cpp type that does not exist, between two that do
    args = ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant.gguf_type=Q4_K_M,Q9_X,Q4_0"]
    done = run_harness(args)
    assert done.returncode == 1  # one job failed
    records = _records(seeded)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert "quant.gguf_type='Q9_X' is not a llama.cpp file type" in records[1]["error"]
    assert "gguf4: ConfigError" in done.stdout  # the summary names the failure
    assert "job 1 of 3" in done.stdout and "job 3 of 3" in done.stdout and "left" in done.stdout
    # both GGUF jobs share one fine-tuned adapter
    assert records[0]["train"]["adapter_key"] == records[2]["train"]["adapter_key"]


def _assert_measured_in_batches(record: dict, n: int) -> None:
    """Both runtimes answer the test split in batches (transformers: padded; llama.cpp: parallel
    sequences) and time 5 queries alone, whose answers the batched ones are compared with."""
    m = record["metrics"]
    assert (m["eval_batch_size"], m["latency_samples"]) == (8, 5)
    assert m["accuracy_pass_peak_rss_mib"] > 0 and 0 <= m["batch_agreement"] <= 1
    assert m["decode_tokens_per_s_by_batch"]["4"] > 0
    # capacity under load: the 5 batch-1 queries again, 4 and 16 at a time
    assert [level["concurrency"] for level in m["load_curve"]] == [1, 4, 16]
    assert all(level["queries_per_s"] > 0 and 0 <= level["agreement"] <= 1 for level in m["load_curve"])
    assert record["bandwidth"]["gb_per_s"] > 0 and "numpy copy" in record["bandwidth"]["method"]
    timed = [json.loads(line)["latency_ms"] for line in open(Path(record["record_dir"]) / "predictions.jsonl")]
    assert len(timed) == n and sum(ms is not None for ms in timed) == 5


def _assert_report_against_baseline(report: Path) -> None:
    """The sweep's report: the baseline and its ratios, files a browser opens offline."""
    md = (report / "report.md").read_text()
    assert "| fp32 |" in md and "baseline" in md and "x decode tok/s" in md
    assert "### Against the baseline, and serving cost" in md and "Against fp32, paired query by query" in md
    assert (report / "report.html").is_file() and (report / "report.csv").is_file()


def _assert_job_run(run_file: Path) -> None:
    """A job's W&B run: job_type evaluate, its answers as a table, and its lineage as artifacts,
    upstream first, each naming the one it was made from; the summary run holds every job in one table."""
    records = wandb_run_records(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    if run.job_type == "sweep-summary":
        assert any(a.type == "run_table" and a.name.endswith("-jobs") for a in artifacts)
        return
    assert run.job_type == "evaluate" and {"fp32", "gguf_q8_0"} & set(run.tags)
    chain = [a for a in artifacts if a.type in ("dataset", "model", "artifact", "record")]
    assert [a.type for a in chain] == ["dataset", "model", "artifact", "record"]
    for upstream, artifact in zip(chain, chain[1:]):
        assert json.loads(artifact.metadata)["derived_from"] == upstream.name
    assert Path(json.loads(chain[2].metadata)["path"]).exists()  # the measured artifact, by reference
    assert any(a.type == "run_table" and a.name.endswith("-predictions") for a in artifacts)
    # the measuring process's progress, forwarded to the run while it measured
    assert any(key.startswith("progress/") for row in wandb_history(run_file) for key in row)


def _assert_wandb_runs(root: Path) -> None:
    """Offline W&B: one run per job with its curve and metrics, one summary run, and W&B's own
    sync tool accepts them."""
    runs = sorted(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 3
    data = [r.read_bytes() for r in runs]
    assert sum(b"sweep-summary" in d for d in data) == 1
    assert sum(b"train/loss" in d and b"decode_tokens_per_s" in d and b"confusion_matrix" in d for d in data) == 2
    for run_file in runs:
        _assert_job_run(run_file)
    wandb_cli = Path(sys.executable).parent / "wandb"
    dry = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run", *(str(r.parent) for r in runs)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert dry.returncode == 0 and "Would sync 3 run(s)" in dry.stdout + dry.stderr, dry.stderr


def test_baseline_and_gguf_side_by_side_with_batches_and_no_secrets(tiny_llama, seeded, monkeypatch):
    secret = "hf_do_not_leak_4242"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + secret)
    args = [
        "--multirun",
        *tiny_job_overrides(tiny_llama, seeded, logger="wandb"),
        "measure.batch_sizes=[1,4]",
        "measure.eval_batch_size=8",
        "measure.latency_samples=5",
        "quant=fp32,gguf_q8_0",
    ]
    done = run_harness(args)
    assert done.returncode == 0, done.stderr[-3000:]
    fp32, gguf = _records(seeded)
    assert fp32["runtime"]["name"] == "transformers" and gguf["runtime"]["name"] == "llama_cpp"
    # a CPU job's measuring process is shown no GPU, and its record lists what it could see
    assert fp32["runtime"]["cuda_visible_devices"] == gguf["runtime"]["cuda_visible_devices"] == ""
    assert fp32["runtime"]["devices"] == ["cpu"]
    assert [d.split(":")[0] for d in gguf["runtime"]["devices"]] == ["CPU"]
    held = fp32["runtime"]["process_held"]
    assert {"torch", "transformers"} <= set(held) and not {"llama_cpp", "gptqmodel"} & set(held)
    for record in (fp32, gguf):
        _assert_measured_in_batches(record, fp32["metrics"]["n_samples"])
    assert fp32["metrics"]["model_mib"] > gguf["metrics"]["model_mib"] > 0
    assert fp32["artifact"]["bits_per_weight"] > 31
    _assert_report_against_baseline(next(seeded.glob("multirun/*/*/report")))
    _assert_wandb_runs(seeded)
    for path in seeded.rglob("*"):  # records, Hydra's config dumps, logs, W&B's files
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_format_by_bits_grid_names_every_cell_for_what_it_built(tiny_llama, seeded):
    args = ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant.format=gguf,bnb", "quant.bits=3,8"]
    done = run_harness(args)
    # a cell that does not exist is skipped, not failed: the sweep succeeds
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    paths = sorted(seeded.glob("multirun/*/*/*/record.json"))
    records = [json.loads(p.read_text()) for p in paths]
    assert [(r["status"], r["job"]["quant"]) for r in records] == [
        ("ok", "gguf_q3km"),
        ("ok", "gguf_q8_0"),
        ("skipped", "bnb3"),
        ("ok", "bnb_int8"),
    ]
    assert "quant.bits=3 is not supported by quant.format=bnb; supported bits: 4, 8" in records[2]["error"]
    assert "SKIPPED bnb3" in done.stdout and "cells do not exist" in done.stdout + done.stderr
    for path, record in zip(paths, records):
        name = record["job"]["quant"]
        assert path.parent.name.endswith(f"_tiny_{name}_full")  # the run directory says the same
        if record["status"] == "ok":
            assert record["config"]["quant"]["name"] == name
            assert record["artifact"]["bits"] == record["job"]["bits"] == record["config"]["quant"]["bits"]
    assert [r["artifact"]["gguf_type"] for r in records[:2]] == ["Q3_K_M", "Q8_0"]
    assert records[3]["runtime"]["kernel"] == "Linear8bitLt"
    report = (next(seeded.glob("multirun/*/*/report")) / "report.md").read_text()
    assert "## Skipped cells" in report and "bnb3" in report
