"""GPTQ through gptqmodel on the CPU: a tiny random Llama calibrated on a real training
split, quantized, saved, reloaded from the cache and run greedily."""

from __future__ import annotations

import json

import pytest

from harness.data.config import DatasetConfig
from harness.data.dataset import build_dataset
from harness.formats.gptq import GPTQQuant
from harness.hardware import HardwareConfig
from harness.measure.run import greedy_answer

from .conftest import build, save_tiny_llama


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("data")
    return build_dataset(DatasetConfig(train_per_cell=2, validation_per_cell=1, test_per_cell=1), ["en", "hr"], cache)


# The kernel on a CPU: gptqmodel's ATen int4 kernel for 4 bits, its plain torch kernel for
# 8 bits and where the groups of 128 do not tile a layer's input (a model 192 wide).
@pytest.mark.parametrize(
    "bits, hidden, kernel",
    [
        (4, 256, "TorchAtenLinear"),
        # the other kernels: make test-full
        pytest.param(8, 256, "TorchLinear", marks=pytest.mark.slow),
        pytest.param(4, 192, "TorchLinear", marks=pytest.mark.slow),
    ],
)
def test_gptq_quantizes_once_loads_and_generates(bits, hidden, kernel, smollm2_tokenizer, data_dir, tmp_path):
    tiny_llama = save_tiny_llama(tmp_path / "model", smollm2_tokenizer, hidden_size=hidden)
    tmp_path = tmp_path / "cache"
    quant = GPTQQuant(format="gptq", bits=bits, group_size=128, calibration_samples=32)
    artifact = build(quant, tiny_llama, tmp_path, data_dir, system="s")
    saved = json.loads((artifact.path / "quantize_config.json").read_text())
    assert (saved["bits"], saved["group_size"], saved["desc_act"]) == (bits, 128, False)
    fp32_mib = sum(p.stat().st_size for p in tiny_llama.glob("*.safetensors")) / 2**20
    assert artifact.info["size_mib"] < fp32_mib and artifact.info["tool"] == "gptqmodel"
    assert list(artifact.path.glob("logs/*.log"))  # gptqmodel's logs stay with the artifact

    again = build(quant, tiny_llama, tmp_path, data_dir, system="s")
    assert again.key == artifact.key and again.info["quantize_wall_s"] == artifact.info["quantize_wall_s"]
    other_system = build(quant, tiny_llama, tmp_path, data_dir, system="t")
    assert other_system.key != artifact.key  # calibrated on other texts: another artifact

    rt = quant.open(artifact.path, HardwareConfig(), threads=2)
    assert type(rt.model.model.layers[0].mlp.up_proj).__name__ == rt.kernel == kernel
    ids = rt.tokenize("<|im_start|>user\nwhere is my order<|im_end|>\n<|im_start|>assistant\n")
    first, second = greedy_answer(rt, ids, max_new_tokens=4), greedy_answer(rt, ids, max_new_tokens=4)
    assert 1 <= first.generated_tokens <= 4 and first.text == second.text
