"""Bring your own model file (model.source=gguf or checkpoint, model.path=...): a GGUF or a
checkpoint directory measured as it is, named and fingerprinted in its record, and a damaged
file refused before any native code opens it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.store import file_digest

from .conftest import run_harness, tiny_job_overrides


def _given(tiny_llama: Path, outputs: Path, path: Path, *extra: str) -> list[str]:
    """The tiny job's data and measurement settings, the model replaced by a file: no quant
    and no training named, as a user would write it."""
    keep = [o for o in tiny_job_overrides(tiny_llama, outputs) if not o.startswith(("model.", "train", "quant"))]
    return [*keep, f"model.path={path}", *extra]


def test_random_bytes_as_a_gguf_is_a_one_line_error_before_any_work(tiny_llama, tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(os.urandom(4096))
    t0 = time.perf_counter()
    done = run_harness(
        _given(tiny_llama, tmp_path, bogus, "model.source=gguf", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    )
    print(f"refused in {time.perf_counter() - t0:.1f} s")
    assert done.returncode == 1  # a plain failure, not a signal
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "job failed" in line]
    assert len(errors) == 1 and f"{bogus} is not a GGUF file" in errors[0], done.stdout[-2000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "failed" and "model.path" in record["error"]
    assert not (tmp_path / "cache" / "artifact").exists()  # nothing was built


@pytest.mark.slow  # two whole jobs, built then as given: make test-full
def test_a_gguf_measured_as_given_scores_as_the_job_that_built_it(tiny_llama, seeded):
    """The Q8_0 file a job built, measured as a user's file: the same prompts (its chat
    template read from the file's metadata), the same answers, the same accuracy."""
    built = run_harness(
        [*tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0", f"hydra.run.dir={seeded / 'built'}"]
    )
    assert built.returncode == 0, built.stderr[-3000:]
    original = json.loads((seeded / "built" / "record.json").read_text())
    gguf = next((seeded / "cache" / "artifact").glob("*/model-Q8_0.gguf"))

    # fine-tuned on this task, so its prompt names no labels, as in the job that built it
    done = run_harness(
        _given(
            tiny_llama,
            seeded,
            gguf,
            "model.source=gguf",
            "model.list_labels=false",
            f"hydra.run.dir={seeded / 'given'}",
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((seeded / "given" / "record.json").read_text())
    assert record["job"]["model"] == "model-Q8_0" and record["job"]["quant"] == "as_given"
    assert record["job"]["train"] == "none" and record["config"]["quant"] is None
    art = record["artifact"]
    assert art["sha256"] == file_digest(gguf) and art["gguf_type"] == "Q8_0" and art["architecture"] == "llama"
    assert art["chat_template_from"] == "gguf metadata" and art["chat_template_in_file"]
    assert art["n_params"] == original["artifact"]["n_params"]
    assert record["runtime"]["name"] == "llama_cpp"
    for key in ("accuracy", "invalid_rate", "n_samples"):
        assert record["metrics"][key] == original["metrics"][key], key

    def answers(r: dict) -> list[str]:
        return [json.loads(line)["raw_answer"] for line in (Path(r["record_dir"]) / "predictions.jsonl").open()]

    assert answers(record) == answers(original)


def test_a_checkpoint_directory_measured_as_given_on_transformers(tiny_llama, tmp_path):
    done = run_harness(
        _given(
            tiny_llama,
            tmp_path,
            tiny_llama,
            "model.source=checkpoint",
            "model.name=tiny",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    art = record["artifact"]
    assert art["format"] == "checkpoint" and art["architecture"] == "LlamaForCausalLM"
    assert art["quant_method"] is None and art["dtype"] == "float32" and art["n_params"] > 0
    assert record["runtime"]["name"] == "transformers" and record["train"] is None


def test_a_checkpoint_without_weights_is_refused(tiny_llama, tmp_path):
    empty = tmp_path / "ckpt"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_llama / "config.json").read_text())
    done = run_harness(
        _given(
            tiny_llama, tmp_path, empty, "model.source=checkpoint", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"
        )
    )
    assert done.returncode == 1
    assert "has a config.json but no weights" in done.stdout + done.stderr


def test_a_checkpoint_where_a_gguf_was_meant_names_both_sources(tiny_llama, tmp_path):
    done = run_harness(
        _given(tiny_llama, tmp_path, tiny_llama, "model.source=gguf", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    )
    assert done.returncode == 1
    assert (
        "model.source=gguf takes a .gguf file, model.source=checkpoint a checkpoint directory"
        in done.stdout + done.stderr
    )


def test_a_sweep_over_files_names_each_run_for_its_file(tmp_path):
    """Two missing files in one sweep: each job fails on its own, in a run directory named as
    its record names the job (the file, as given, not trained), and the sweep goes on."""
    done = run_harness(
        [
            "--multirun",
            "model.source=gguf",
            f"model.path={tmp_path / 'a.gguf'},{tmp_path / 'b.gguf'}",
            "logger=none",
            f"paths.output_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    assert done.returncode != 0
    runs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/record.json"))
    assert runs == ["0_a_as_given_none", "1_b_as_given_none"], done.stdout[-2000:]
    record = json.loads((tmp_path / "sweep" / runs[1] / "record.json").read_text())
    assert record["status"] == "failed" and record["job"]["quant"] == "as_given" and "b.gguf" in record["error"]
