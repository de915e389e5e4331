"""Named sweeps: every job of every sweep in sweeps/ composes to a valid config, and a GPU
sweep on a machine without a GPU stops before its first job."""

from __future__ import annotations

import itertools
import json
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir

from harness.config import register_configs, to_job_config
from harness.errors import UnsupportedCell

from .conftest import REPO, run_harness, tiny_job_overrides

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _choices(value) -> list[str]:
    """'a,b' (basic sweeper) or 'choice(a, b)' (Optuna) as its options."""
    text = str(value).strip()
    if text.startswith("choice(") and text.endswith(")"):
        text = text[len("choice(") : -1]
    return [v.strip() for v in text.split(",")]


def _jobs(sweep) -> list[list[str]]:
    params = yaml.safe_load(sweep.read_text())["hydra"]["sweeper"]["params"]
    return [
        [f"{k}={v}" for k, v in zip(params, combo)]
        for combo in itertools.product(*(_choices(v) for v in params.values()))
    ]


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_every_job_of_every_named_sweep_composes(sweep):
    """Every job composes, except the cells of a format x bits grid that do not exist: those
    say so (and a sweep records them as skipped)."""
    jobs = _jobs(sweep)
    assert jobs
    register_configs()
    names, missing = [], []
    # as `--config-dir sweeps` does: the sweep is the primary config, conf/ is searched too
    with initialize_config_dir(config_dir=str(REPO / "sweeps"), version_base="1.3"):
        for overrides in jobs:
            try:
                job = to_job_config(
                    compose(sweep.stem, overrides=[f"hydra.searchpath=[file://{REPO / 'conf'}]", *overrides])
                )
            except UnsupportedCell:
                missing.append(overrides)
                continue
            assert job.model.name == "smollm2_135m"
            if sweep.stem == "paper_gpu":  # the study's GPU rows start from its QLoRA fine-tune, on CUDA
                assert (job.train.method, job.hardware.device) == ("qlora", "cuda")
            names.append(job.quant.name)
    if sweep.stem == "grid":  # every cell is named for what it runs
        assert missing == [["quant.format=bnb", "quant.bits=3"]]
        assert names == ["gguf_q3km", "gguf_q4km", "gguf_q8_0", "gptq3", "gptq4", "gptq8", "bnb_nf4", "bnb_int8"]
    else:
        assert not missing


def test_paper_sweeps_cover_the_studys_formats():
    cpu = {o[0].split("=")[1] for o in _jobs(REPO / "sweeps" / "paper_cpu.yaml")}
    assert {"fp32", "bf16", "gguf_f16", "gguf_q8_0", "gguf_q5km", "gguf_q4km", "gguf_q3km", "gptq4"} <= cpu
    gpu = {o[0].split("=")[1] for o in _jobs(REPO / "sweeps" / "paper_gpu.yaml")}
    assert {"fp16", "gptq4", "gptq8", "bnb_nf4", "gguf_q4km"} <= gpu


def test_the_cpu_runtimes_sweep_runs_every_cpu_runtime_on_one_fine_tune():
    jobs = _jobs(REPO / "sweeps" / "cpu_runtimes.yaml")
    assert [o for job in jobs for o in job] == [
        f"quant={q}"
        for q in ("fp32", "gguf_q8_0", "gguf_q4km", "ort_int4", "ort_int8", "openvino_int8", "openvino_int4")
    ]  # only quant varies: the fine-tune is the default job's, shared by all


def test_gpu_sweep_without_a_gpu_stops_before_any_job(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the sweep would run")
    t0 = time.monotonic()
    done = run_harness(
        ["--config-dir", "sweeps", "--config-name", "paper_gpu", "--multirun", f"paths.output_dir={tmp_path}"]
    )
    assert done.returncode == 2
    assert "hardware=cuda but no CUDA device is visible" in done.stdout + done.stderr
    assert "no job was started" in done.stdout + done.stderr
    assert not list(tmp_path.glob("multirun/*/*/*/record.json")) and time.monotonic() - t0 < 60


@pytest.mark.slow  # six tiny jobs through Optuna: make test-full
def test_optuna_search_runs_trials_persists_its_study_and_writes_the_pareto_front(tiny_llama, seeded):
    args = [
        "--config-dir",
        "sweeps",
        "--config-name",
        "search",
        "--multirun",
        *tiny_job_overrides(tiny_llama, seeded),
        "hydra.sweeper.n_trials=3",
    ]
    done = run_harness(args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = next(seeded.glob("multirun/*/*"))
    front = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert front["name"] == "optuna" and front["solutions"]
    for solution in front["solutions"]:
        assert len(solution["values"]) == 2 and set(solution["params"]) == {"quant", "hardware.threads"}
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/record.json")]
    assert len(records) == 3 and {r["status"] for r in records} == {"ok"}
    assert (seeded / "optuna.db").is_file() and (sweep_dir / "report" / "report.html").is_file()
    # the study persists: a second run resumes it, with three more trials
    again = run_harness(args)
    assert again.returncode == 0
    import optuna

    study = optuna.load_study(study_name="slm-harness-search", storage=f"sqlite:///{seeded / 'optuna.db'}")
    assert len(study.trials) == 6
