"""Real llama.cpp conversion and quantization of a tiny random Llama, and clear errors for
damaged files."""

from __future__ import annotations

import pytest

from harness.formats.gguf import GGUFQuant, check_gguf_file
from harness.gguf_header import read_header
from harness.hardware import HardwareConfig
from harness.measure.run import greedy_answer
from harness.prompt import render_prompt
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
    for query in (
        "where is my order #123456",
        "Gdje je moja narudžba?",
        "Wo ist meine Bestellung, bitte?",
        "¿Puedo pagar con PayPal?",
        "remboursement pas reçu :(",
    ):
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


def test_header_reads_as_the_gguf_package_reads_it(q4_artifact):
    """The ctypes binding to llama.cpp's reader against an independent one: the gguf package's."""
    from gguf import GGUFReader, LlamaFileType

    _, artifact = q4_artifact
    header, reader = read_header(artifact.path), GGUFReader(artifact.path)
    assert [(t.name, t.type_name, t.n_elements, t.offset, t.n_bytes) for t in header.tensors] == [
        (t.name, t.tensor_type.name, int(t.n_elements), int(t.data_offset), int(t.n_bytes)) for t in reader.tensors
    ]
    assert header.keys == {k for k in reader.fields if not k.startswith("GGUF.")}
    for key in ("general.architecture", "general.file_type", "tokenizer.chat_template", "llama.context_length"):
        assert header.values[key] == reader.fields[key].contents(), key
    assert (
        header.file_type
        == "Q4_K_M"
        == LlamaFileType(reader.fields["general.file_type"].contents()).name.removeprefix("MOSTLY_")
    )


def test_a_header_cut_short_is_a_clear_error(q4_artifact, tmp_path):
    _, artifact = q4_artifact
    cut = tmp_path / "header.gguf"
    cut.write_bytes(artifact.path.read_bytes()[:4096])  # inside the vocabulary's metadata
    with pytest.raises(ValueError, match="damaged GGUF file.*rejected its header"):
        check_gguf_file(cut)


def test_foreign_file_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        check_gguf_file(bogus)
    with pytest.raises(FileNotFoundError):
        check_gguf_file(tmp_path / "missing.gguf")


def test_parallel_sequences_compute_what_one_sequence_alone_computes(smollm2_tokenizer, tmp_path):
    """The accuracy pass on llama.cpp: prompts of different lengths, their shared prefix
    evaluated once and copied, decoded together as parallel sequences. Every sequence's
    logits are those it gets alone, up to summation order (ggml is not batch-invariant,
    llama.cpp #6950: a few percent here, amplified by this random model); a slip in
    positions, sequence ids or the copied prefix gives unrelated logits. A lone sequence on
    that path answers exactly as the batch-1 pass does."""
    import numpy as np

    from harness.measure.run import batched_answers
    from harness.prompt import common_prefix
    from harness.runtimes.llama_cpp import logits_row

    from .conftest import MIXED_LENGTH_QUERIES as queries
    from .conftest import save_tiny_llama

    model = save_tiny_llama(tmp_path / "model", smollm2_tokenizer, initializer_range=0.2)
    artifact = build(GGUFQuant(format="gguf", bits=8), model, tmp_path / "cache")
    rt = LlamaCppRuntime(artifact.path, HardwareConfig(), threads=2)
    prompts = [rt.tokenize(render_prompt(smollm2_tokenizer, q, "Classify the query.")) for q in queries]
    shared = common_prefix(prompts)
    assert len({len(p) for p in prompts}) > 3 and shared > 5

    def alone(ids: list[int]):
        rt.start(ids)
        return logits_row(rt.llm.ctx, -1, rt.n_vocab)

    def distance(a, b) -> float:
        return float(np.abs(a - b).max() / np.abs(b).max())

    p = rt._sequences(len(prompts), 4096)
    p.reset(len(prompts))
    p.feed([(0, prompts[0][:shared])], logits=False)
    p.share(0, list(range(1, len(prompts))))
    together = p.feed_logits([(s, ids[shared:]) for s, ids in enumerate(prompts)])
    nexts = {s: int(row.argmax()) for s, row in together.items()}
    stepped = p.feed_logits([(s, [t]) for s, t in nexts.items()])
    for s, ids in enumerate(prompts):
        assert distance(together[s], alone(ids)) < 0.1, s
        assert distance(stepped[s], alone(ids + [nexts[s]])) < 0.1, s
        # and against another prompt's logits, the distance a mix-up would show
        assert distance(together[s], alone(prompts[s - 1])) > 0.3

    one_by_one = [greedy_answer(rt, ids, max_new_tokens=6).text for ids in prompts]
    assert batched_answers(rt, prompts, batch_size=1, max_new_tokens=6) == one_by_one
    assert len(batched_answers(rt, prompts, batch_size=3, max_new_tokens=6)) == len(prompts)
    # batched decoding of equal prompts (the speed test's batches): one next token per sequence
    first = rt.start_batch([prompts[0]] * 4)
    assert first == [rt.start(prompts[0])] * 4 and len(rt.step_batch(first)) == 4


@pytest.mark.slow
def test_importance_matrix_is_a_stage_of_its_own_and_weights_the_quantization(tiny_llama, tmp_path):
    """quant.imatrix=true: llama.cpp's llama-imatrix over rendered training rows, cached once
    and shared by every type quantized with it; the file differs from the plain one of the
    same type, and llama.cpp runs it."""
    from harness.data.config import DatasetConfig
    from harness.data.dataset import build_dataset

    cache = tmp_path / "cache"
    data = build_dataset(DatasetConfig(train_per_cell=4, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    plain = build(GGUFQuant(format="gguf", bits=3), tiny_llama, cache, data, system="Classify.")
    weighted = build(GGUFQuant(format="gguf", bits=3, imatrix=True), tiny_llama, cache, data, system="Classify.")
    assert weighted.key != plain.key and weighted.info["imatrix"] and not plain.info["imatrix"]
    assert weighted.path.read_bytes() != plain.path.read_bytes()
    (matrix,) = (cache / "imatrix").glob("*/imatrix.gguf")
    check_gguf_file(matrix)  # llama.cpp writes its matrices as GGUF too
    calibration = (matrix.parent / "calibration.txt").read_text()
    assert "<|im_start|>assistant" in calibration and '{"intent": ' in calibration  # rows as the model sees them
    made = matrix.stat().st_mtime_ns

    iq4 = build(
        GGUFQuant(format="gguf", bits=4, gguf_type="IQ4_XS", imatrix=True), tiny_llama, cache, data, system="Classify."
    )
    assert [p.stat().st_mtime_ns for p in (cache / "imatrix").glob("*/imatrix.gguf")] == [made]  # one matrix, reused
    rt = LlamaCppRuntime(iq4.path, HardwareConfig(), threads=2)
    assert (
        greedy_answer(rt, rt.tokenize("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), 4).generated_tokens
        >= 1
    )


def test_imatrix_without_llama_cpp_tools_names_the_make_target(tmp_path):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="make llama-tools"):
        GGUFQuant(format="gguf", bits=3, imatrix=True).check(llama_cpp_bin=str(tmp_path))
    with pytest.raises(ConfigError, match="unquantized type has nothing to weight"):
        GGUFQuant(format="gguf", bits=16, imatrix=True)
