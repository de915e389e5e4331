"""W&B is a view of the records: what it is given, and that its failures never cost a record."""

import logging

from harness.report.wandb_log import LoggerConfig, log_job, summary_metrics


def test_summary_metrics_are_flat_scalars_with_units_in_their_names():
    record = {
        "metrics": {"accuracy": 0.9, "decode_tokens_per_s": 170.0, "peak_rss_mib": 500.0, "energy_j_per_query": None,
                    "accuracy_ci95": [0.8, 0.95], "accuracy_by_language": {"en": 1.0, "hr": 0.8},
                    "f1_by_intent": {"refund_status": 0.5}, "confusion": {"a": {"a": 1}}},
        "artifact": {"size_mib": 101.0, "bits_per_weight": 4.9, "quantize_wall_s": 3.0, "tool": "llama.cpp"},
        "train": {"train_wall_s": 240.0, "loss": [2.0, 1.0]},
    }
    assert summary_metrics(record) == {
        "accuracy": 0.9, "decode_tokens_per_s": 170.0, "peak_rss_mib": 500.0, "accuracy/en": 1.0, "accuracy/hr": 0.8,
        "f1/refund_status": 0.5, "size_mib": 101.0, "bits_per_weight": 4.9, "quantize_wall_s": 3.0, "train_wall_s": 240.0,
    }


def test_wandb_that_cannot_log_in_is_a_warning_not_a_failure(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    record = {"status": "ok", "job": {"format": "gguf"}, "config": {}, "metrics": {"accuracy": 1.0}}
    with caplog.at_level(logging.WARNING):
        log_job(record, LoggerConfig(mode="online", dir=str(tmp_path / "out")), group="g", name="n")
    assert "W&B: could not start a run" in caplog.text and "record on disk is unaffected" in caplog.text


def test_logger_none_touches_nothing(tmp_path):
    log_job({"status": "ok", "job": {}, "metrics": {}}, LoggerConfig(name="none", dir=str(tmp_path / "out")), group="g", name="n")
    assert not (tmp_path / "out").exists()
