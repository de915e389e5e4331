"""Scale-out through Hydra's own launchers: jobs in parallel processes racing for one cache."""

from __future__ import annotations

import json

import pytest

from .conftest import run_harness, tiny_job_overrides


def _records(root):
    return [json.loads(p.read_text()) for p in sorted(root.glob("multirun/*/*/*/record.json"))]


@pytest.mark.slow  # two jobs training in parallel on two cores: make test-full
def test_joblib_runs_two_jobs_at_once_and_they_train_one_adapter(tiny_llama, tmp_path):
    done = run_harness(
        [
            "--multirun",
            *tiny_job_overrides(tiny_llama, tmp_path),
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "quant=gguf_q8_0,gguf_q4km",
        ]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    records = _records(tmp_path)
    assert [r["status"] for r in records] == ["ok", "ok"]
    # both jobs needed the same adapter at the same moment: the lock let one train it
    assert records[0]["train"]["adapter_key"] == records[1]["train"]["adapter_key"]
    adapter_key = records[0]["train"]["adapter_key"]
    assert [p.name for p in (tmp_path / "cache" / "adapter").iterdir() if p.is_dir()] == [adapter_key]
    # one job trained it, the other waited on the lock and loaded it
    assert (done.stdout + done.stderr).count(f"cache hit: adapter/{adapter_key}") == 1


@pytest.mark.slow  # a launcher's own start-up: make test-full
def test_ray_local_launcher_runs_a_two_job_sweep(tiny_llama, seeded):
    done = run_harness(
        [
            "--multirun",
            *tiny_job_overrides(tiny_llama, seeded),
            "hydra/launcher=ray",
            "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false",
            "+hydra.launcher.ray.remote.num_cpus=1",
            "quant=gguf_q8_0,gguf_q4km",
        ]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Ray Launcher is launching 2 jobs" in done.stdout + done.stderr
    assert [r["status"] for r in _records(seeded)] == ["ok", "ok"]


@pytest.mark.slow  # a launcher's own start-up: make test-full
def test_submitit_local_runs_a_job(tiny_llama, seeded):
    done = run_harness(
        [
            "--multirun",
            *tiny_job_overrides(tiny_llama, seeded),
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "quant=gguf_q8_0",
        ]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [r["status"] for r in _records(seeded)] == ["ok"]
    assert list(seeded.glob("multirun/*/*/.submitit/*/*_log.out"))  # submitit's own job logs


def test_slurm_preset_composes(tiny_llama, tmp_path):
    done = run_harness(
        [
            "--cfg",
            "hydra",
            *tiny_job_overrides(tiny_llama, tmp_path),
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in done.stdout
    assert "gpus_per_node: 1" in done.stdout and "partition: gpu" in done.stdout
