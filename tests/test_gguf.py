"""Real llama.cpp conversion and quantization of a tiny random Llama, and clear errors for
damaged files."""

from __future__ import annotations

import pytest

from harness.formats.gguf import GGUFQuant
from harness.hardware import HardwareConfig
from harness.measure.run import greedy_answer
from harness.prompt import render_prompt
from harness.formats.gguf import check_gguf_file
from harness.runtimes.llama_cpp import LlamaCppRuntime

from .conftest import build


@pytest.fixture(scope="module")
def q4_artifact(tiny_llama, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    quant = GGUFQuant(format="gguf", bits=4, gguf_type="Q4_K_M")
    return cache, build(quant, tiny_llama, cache)


def test_quantized_from_f16_and_smaller(q4_artifact):
    cache, artifact = q4_artifact
    f16 = list(cache.glob("artifact/*/model-F16.gguf"))
    assert len(f16) == 1 and artifact.path.name == "model-Q4_K_M.gguf"
    assert artifact.info["size_mib"] < f16[0].stat().st_size / 2**20 / 2
    assert 4 < artifact.info["bits_per_weight"] < 8
    check_gguf_file(artifact.path)


def test_second_build_is_a_cache_hit(q4_artifact, tiny_llama):
    cache, artifact = q4_artifact
    before = artifact.path.stat().st_mtime_ns
    quant = GGUFQuant(format="gguf", bits=4, gguf_type="Q4_K_M")
    again = build(quant, tiny_llama, cache)
    assert again.path == artifact.path and again.path.stat().st_mtime_ns == before
    assert again.info["quantize_wall_s"] == artifact.info["quantize_wall_s"]


def test_llama_cpp_runtime_generates_greedily(q4_artifact):
    _, artifact = q4_artifact
    rt = LlamaCppRuntime(artifact.path, HardwareConfig(), threads=2)
    ids = rt.tokenize("<|im_start|>user\nwhere is my order<|im_end|>\n<|im_start|>assistant\n")
    first = greedy_answer(rt, ids, max_new_tokens=5)
    second = greedy_answer(rt, ids, max_new_tokens=5)
    assert 1 <= first.generated_tokens <= 5
    assert first.text == second.text  # greedy and reset between queries
    assert first.ttft_s <= first.latency_s


def test_llama_cpp_reads_the_rendered_prompt_as_the_hf_tokenizer_does(q4_artifact, smollm2_tokenizer):
    """The measuring process gets rendered prompt texts and tokenizes them with llama.cpp's own
    tokenizer (as a llama.cpp server does); those ids are the ones the HF tokenizer gives."""
    _, artifact = q4_artifact
    rt = LlamaCppRuntime(artifact.path, HardwareConfig(), threads=2)
    for query in ("where is my order #123456", "Gdje je moja narudžba?", "Wo ist meine Bestellung, bitte?",
                  "¿Puedo pagar con PayPal?", "remboursement pas reçu :("):
        text = render_prompt(smollm2_tokenizer, query, "Classify the e-commerce query. Answer with JSON.")
        assert rt.tokenize(text) == smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_truncated_gguf_is_a_clear_error(q4_artifact, tmp_path):
    _, artifact = q4_artifact
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(artifact.path.read_bytes()[: artifact.path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated|damaged"):
        check_gguf_file(cut)
    with pytest.raises(ValueError, match="truncated|damaged"):
        GGUFQuant(format="gguf", bits=4).verify(cut)  # what a job checks before measuring


def test_foreign_file_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        check_gguf_file(bogus)
    with pytest.raises(FileNotFoundError):
        check_gguf_file(tmp_path / "missing.gguf")
