"""W&B is a view of the records: what it is given, and that its failures never cost a record."""

import concurrent.futures
import logging
import multiprocessing

from harness.record import Record
from harness.report.config import LoggerConfig
from harness.report.wandb_log import log_job, summary_metrics


def test_summary_metrics_are_flat_scalars_with_units_in_their_names():
    record = Record.from_json(
        {
            "job": {},
            "metrics": {
                "accuracy": 0.9,
                "decode_tokens_per_s": 170.0,
                "peak_rss_mib": 500.0,
                "energy_j_per_query": None,
                "accuracy_ci95": [0.8, 0.95],
                "accuracy_by_language": {"en": 1.0, "hr": 0.8},
                "f1_by_intent": {"refund_status": 0.5},
                "confusion": {"a": {"a": 1}},
            },
            "artifact": {"size_mib": 101.0, "bits_per_weight": 4.9, "quantize_wall_s": 3.0, "tool": "llama.cpp"},
            "train": {"train_wall_s": 240.0, "loss": [2.0, 1.0]},
        }
    )
    assert summary_metrics(record) == {
        "accuracy": 0.9,
        "decode_tokens_per_s": 170.0,
        "peak_rss_mib": 500.0,
        "accuracy/en": 1.0,
        "accuracy/hr": 0.8,
        "f1/refund_status": 0.5,
        "size_mib": 101.0,
        "bits_per_weight": 4.9,
        "quantize_wall_s": 3.0,
        "train_wall_s": 240.0,
    }


def test_wandb_that_cannot_log_in_is_a_warning_not_a_failure(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    record = Record.from_json(dict(job={"format": "gguf"}, metrics={"accuracy": 1.0}))
    with caplog.at_level(logging.WARNING):
        log_job(record, LoggerConfig(mode="online", dir=str(tmp_path / "out")), group="g", name="n")
    assert "W&B: could not start a run" in caplog.text and "record on disk is unaffected" in caplog.text


def test_logger_none_touches_nothing(tmp_path):
    log_job(
        Record.from_json(dict(job={})),
        LoggerConfig(name="none", dir=str(tmp_path / "out")),
        group="g",
        name="n",
    )
    assert not (tmp_path / "out").exists()


def test_an_offline_job_run_holds_its_lineage_and_predictions(tmp_path):
    """The run's own files (read back as W&B's records): job_type evaluate, the chain of
    artifacts upstream first, each naming the one it came from, the predictions table, and a
    served load's per-rate table."""
    import json

    from .conftest import wandb_run_records

    stages = {}
    for stage in ("dataset", "model", "artifact"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "file.txt").write_text(stage)
        stages[stage] = str(tmp_path / stage)
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    (record_dir / "record.json").write_text("{}")
    (record_dir / "predictions.jsonl").write_text(
        json.dumps(
            {
                "text": "where is my order",
                "language": "en",
                "intent": "order_status",
                "predicted": "order_status",
                "correct": True,
                "raw_answer": '{"intent": "order_status"}',
                "latency_ms": 12.5,
            }
        )
        + "\n"
    )
    record = Record.from_json(
        dict(
            job={"format": "gguf", "quant": "gguf_q8_0"},
            metrics={"accuracy": 1.0},
            keys={"record": "r" * 20},
            record_dir=str(record_dir),
            lineage=[{"stage": s, "key": s[0] * 20, "path": p} for s, p in stages.items()],
            served={
                "slots": 4,
                "server": "version: 1 (x)",
                "slo_p95_ms": 1000.0,
                "capacity_queries_per_s": 5.0,
                "capacity_interval_queries_per_s": [5.0, 6.0],
                "in_process_capacity_queries_per_s": None,
                "requests_per_rate": 10,
                "warmup_requests": 2,
                "seed": 0,
                "capacity_fidelity": 0.8,
                "server_peak_rss_mib": 300.0,
                "rates": [
                    {"mode": "poisson", "offered_queries_per_s": 5.0, "goodput_ci95": [0.9, 1.0], "goodput": 0.97}
                ],
            },
        )
    )
    # in a fresh process, as a sweep's job logs it: W&B's process-wide state left by the tests
    # before this one (in one pytest process) made wandb.init ask for a login in offline mode
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        pool.submit(log_job, record, LoggerConfig(mode="offline", dir=str(tmp_path / "out")), "g", "n").result()
    (run_file,) = (tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_run_records(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.job_type == "evaluate" and set(run.tags) == {"gguf", "gguf_q8_0"}
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    chain = [a for a in artifacts if a.type in ("dataset", "model", "artifact", "record")]
    assert [(a.type, a.name) for a in chain] == [
        ("dataset", "dataset-dddddddddddddddd"),
        ("model", "model-mmmmmmmmmmmmmmmm"),
        ("artifact", "artifact-aaaaaaaaaaaaaaaa"),
        ("record", "record-rrrrrrrrrrrrrrrr"),
    ]
    assert [json.loads(a.metadata)["derived_from"] for a in chain] == [None, *(a.name for a in chain[:-1])]
    assert any(a.type == "run_table" and a.name.endswith("-predictions") for a in artifacts)
    assert any(a.type == "run_table" and a.name.endswith("-served_load") for a in artifacts)  # the per-rate table


def test_a_job_that_fine_tunes_logs_its_training_live_into_its_one_run(tuned_cache):
    """The tiny job behind `tuned_cache` trained two steps with logger=wandb: its one run holds
    the loss at each step, sent from the training process while it ran, and each stage's
    progress against the job's elapsed seconds."""
    from .conftest import wandb_history

    (run_file,) = (tuned_cache.parent / "wandb").glob("offline-run-*/run-*.wandb")
    rows = wandb_history(run_file)
    training = [r for r in rows if "train/loss" in r]
    assert [r["train/step"] for r in training] == [1, 2] and all(r["train/loss"] > 0 for r in training)
    assert all("train/learning_rate" in r for r in training)
    stages = {
        k.removeprefix("progress/") for r in rows for k in r if k.startswith("progress/") and k != "progress/elapsed_s"
    }
    assert {"fine-tune", "evaluate"} <= stages
    assert [r["progress/fine-tune"] for r in rows if "progress/fine-tune" in r][-1] == 1.0
    # the record's figures close the same run
    assert any(k.startswith("confusion_matrix") for r in rows for k in r)
