"""The core install and its extras: a GGUF job runs with none of the optional packages, and a
choice whose extra is missing is refused at once, in one line naming the install.

"Not installed" is emulated in the harness's own process and every process it spawns (a
sitecustomize on PYTHONPATH): the optional packages' imports fail, `find_spec` does not find
them and their metadata is gone, as after `pip install slm-harness` alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO, tiny_job_overrides

# Every extra's distributions, by their import names.
OPTIONAL = {
    "gptqmodel": "gptqmodel",
    "optimum": "optimum",
    "bitsandbytes": "bitsandbytes",
    "onnxruntime_genai": "onnxruntime-genai",
    "onnx": "onnx",
    "onnx_ir": "onnx-ir",
    "openvino": "openvino",
    "openvino_genai": "openvino-genai",
    "openvino_tokenizers": "openvino-tokenizers",
    "nncf": "nncf",
    "openai": "openai",
    "ray": "ray",
    "submitit": "submitit",
    "optuna": "optuna",
    "sqlalchemy": "sqlalchemy",
    "hydra_plugins.hydra_ray_launcher": "hydra-ray-launcher",
    "hydra_plugins.hydra_submitit_launcher": "hydra-submitit-launcher",
    "hydra_plugins.hydra_optuna_sweeper": "hydra-optuna-sweeper",
}

SITECUSTOMIZE = """
import importlib.abc, importlib.metadata, importlib.util, sys

MODULES = {modules!r}
DISTRIBUTIONS = {{name.lower().replace("_", "-") for name in {distributions!r}}}


def _blocked(name):
    return any(name == m or name.startswith(m + ".") for m in MODULES)


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


_find_spec, _distribution = importlib.util.find_spec, importlib.metadata.distribution


def find_spec(name, package=None):
    return None if _blocked(name) else _find_spec(name, package)


def distribution(name):
    if name.lower().replace("_", "-") in DISTRIBUTIONS:
        raise importlib.metadata.PackageNotFoundError(name)
    return _distribution(name)


sys.meta_path.insert(0, _NotInstalled())
importlib.util.find_spec, importlib.metadata.distribution = find_spec, distribution
"""


@pytest.fixture(scope="module")
def core_only(tmp_path_factory) -> dict:
    """An environment for `python -m harness` in which no extra is installed."""
    site = tmp_path_factory.mktemp("core_only")
    distributions = sorted({*OPTIONAL.values(), *OPTIONAL})
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(modules=sorted(OPTIONAL), distributions=distributions))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_emulation_hides_what_an_extra_installs(core_only):
    probe = (
        "import importlib.util, importlib.metadata as m\n"
        "assert importlib.util.find_spec('bitsandbytes') is None\n"
        "try:\n    m.version('gptqmodel')\nexcept m.PackageNotFoundError:\n    pass\n"
        "else:\n    raise SystemExit('seen')\n"
        "try:\n    import openai\nexcept ModuleNotFoundError:\n    print('hidden')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=core_only, capture_output=True, text=True)
    assert done.stdout.strip() == "hidden", done.stderr


def test_a_gguf_job_runs_on_the_core_alone(tiny_llama, seeded, core_only):
    done = run(
        [*tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0", f"hydra.run.dir={seeded / 'run'}"], core_only
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((seeded / "run" / "record.json").read_text())
    assert (record["status"], record["job"]["quant"]) == ("ok", "gguf_q8_0"), record.get("error")


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["quant=gptq4"],
            "quant.format=gptq needs gptqmodel, optimum, which is not installed here: pip install 'slm-harness[gptq]'",
        ),
        (["quant=bnb_nf4"], "pip install 'slm-harness[bnb]'"),
        (
            ["quant=ort_int4"],
            "quant.format=ort needs onnxruntime_genai, onnx, onnx_ir, which is not installed here: "
            "pip install 'slm-harness[onnx]'",
        ),
        (
            ["quant=openvino_int4"],
            "quant.format=openvino needs openvino, openvino_genai, openvino_tokenizers, nncf, which is not installed "
            "here: pip install 'slm-harness[openvino]'",
        ),
        (
            ["train=qlora"],
            "train.method=qlora (its frozen base in 4-bit NF4) needs bitsandbytes, which is not installed here: "
            "pip install 'slm-harness[bnb]'",
        ),
        (
            ["-m", "hydra/launcher=ray"],
            "hydra/launcher=ray needs hydra-ray-launcher, which is not installed here: pip install 'slm-harness[ray]'",
        ),
        (["-m", "hydra/launcher=slurm"], "pip install 'slm-harness[slurm]'"),
        (
            ["--config-dir", "sweeps", "--config-name", "search"],
            "hydra/sweeper=optuna needs hydra-optuna-sweeper, which is not installed here: "
            "pip install 'slm-harness[search]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_before_any_work(tiny_llama, tmp_path, core_only, args, line):
    done = run(
        [
            *args,
            *tiny_job_overrides(tiny_llama, tmp_path),
            f"hydra.run.dir={tmp_path / 'run'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        core_only,
        timeout=120,
    )
    assert done.returncode == 1
    assert line in done.stdout + done.stderr
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_every_format_names_an_extra_that_pyproject_declares():
    from harness.formats import registry

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].lower() for r in project["dependencies"]}
    for cls in set(registry().values()):
        for package in cls.PACKAGES:
            name = package.lower().replace("_", "-")
            if name in core:
                continue
            assert cls.EXTRA, f"{cls.__name__} needs {package}, which is not in the core: give it an EXTRA"
            declared = {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].lower() for r in extras[cls.EXTRA]}
            assert name in declared, f"{cls.__name__}: {package} is not in the [{cls.EXTRA}] extra"
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == set(extras) - {"all", "dev"}


def test_a_gptq_checkpoint_without_its_backend_is_refused_before_any_work(tiny_llama, tmp_path, core_only):
    """A checkpoint quantized with GPTQ, measured as given, with the `gptq` extra missing: one
    line naming the install, before the dataset or anything else is built."""
    checkpoint = tmp_path / "gptq-checkpoint"
    shutil.copytree(tiny_llama, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True}
    (checkpoint / "config.json").write_text(json.dumps(config))
    keep = [o for o in tiny_job_overrides(tiny_llama, tmp_path) if not o.startswith(("model.", "train", "quant"))]
    done = run(
        [*keep, "model.source=checkpoint", f"model.path={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}"],
        core_only,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        f"model.path={checkpoint} (a gptq-quantized checkpoint) needs gptqmodel, optimum, which is not installed "
        "here: pip install 'slm-harness[gptq]'"
    ) in done.stdout + done.stderr
    assert not (tmp_path / "cache").exists()  # nothing was built


@pytest.mark.parametrize(
    "source, runtime, extra", [("onnx", "onnxruntime_genai", "onnx"), ("openvino", "openvino_genai", "openvino")]
)
def test_a_model_directory_without_its_extra_is_one_line_before_any_work(
    tiny_llama, tmp_path, core_only, source, runtime, extra
):
    keep = [o for o in tiny_job_overrides(tiny_llama, tmp_path) if not o.startswith(("model.", "train", "quant"))]
    done = run(
        [*keep, f"model.source={source}", f"model.path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"], core_only
    )
    assert done.returncode == 1
    assert (
        f"model.source={source} needs {runtime}, which is not installed here: pip install 'slm-harness[{extra}]'"
        in done.stdout + done.stderr
    )
