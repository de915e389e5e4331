"""bitsandbytes NF4 and LLM.int8 on the CPU: real quantization of a tiny random Llama,
serialized, reloaded from the cache and run greedily."""

from __future__ import annotations

import json

import pytest

from harness.formats.bnb import BnbQuant
from harness.hardware import HardwareConfig
from harness.measure.run import greedy_answer

from .conftest import build


@pytest.mark.parametrize("bits, layer", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_bnb_quantizes_once_loads_and_generates(bits, layer, tiny_llama, tmp_path):
    quant = BnbQuant(format="bnb", bits=bits)
    artifact = build(quant, tiny_llama, tmp_path)
    saved = json.loads((artifact.path / "config.json").read_text())["quantization_config"]
    assert saved["load_in_4bit" if bits == 4 else "load_in_8bit"] is True
    fp32_mib = sum(p.stat().st_size for p in tiny_llama.glob("*.safetensors")) / 2**20
    assert artifact.info["size_mib"] < fp32_mib and artifact.info["tool"] == "bitsandbytes"

    again = build(quant, tiny_llama, tmp_path)
    assert again.key == artifact.key and again.info["quantize_wall_s"] == artifact.info["quantize_wall_s"]

    rt = quant.open(artifact.path, HardwareConfig(), threads=2)
    assert type(rt.model.model.layers[0].mlp.up_proj).__name__ == layer
    ids = rt.tokenize("<|im_start|>user\nwhere is my order<|im_end|>\n<|im_start|>assistant\n")
    first, second = greedy_answer(rt, ids, max_new_tokens=4), greedy_answer(rt, ids, max_new_tokens=4)
    assert 1 <= first.generated_tokens <= 4 and first.text == second.text
