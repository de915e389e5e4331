"""ONNX Runtime GenAI on the tiny random Llama: its model builder's int4 and int8 as cached
stages, the runtime's constrained answers chosen by the same trie code as llama.cpp's, the
same labels as llama.cpp for the same model where the logits are not near-tied, a whole job
through the real pipeline, and an ORT directory measured as given (and refused, in one line,
when it is damaged)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime_genai")

from harness.formats.ort import OrtQuant, check_onnx_dir  # noqa: E402
from harness.hardware import HardwareConfig  # noqa: E402
from harness.measure.run import greedy_answer, label_trie  # noqa: E402
from harness.prompt import render_prompt  # noqa: E402
from harness.runtimes.constrain import pick  # noqa: E402
from harness.runtimes.onnx_genai import OnnxGenAIRuntime  # noqa: E402

from .conftest import MIXED_LENGTH_QUERIES, build, run_harness, tiny_job_overrides  # noqa: E402

LABELS = ["order_status", "refund", "cancel_order", "payment_methods"]
SYSTEM = "Classify the e-commerce query. Answer with JSON."


@pytest.fixture(scope="module")
def ort_job(tiny_llama, tmp_path_factory) -> Path:
    """A whole job, quant=ort_int4 on the untrained tiny model: built, checked, measured."""
    out = tmp_path_factory.mktemp("ort_job")
    done = run_harness(
        [
            *tiny_job_overrides(tiny_llama, out),
            "quant=ort_int4",
            "train=none",
            "measure.decoding=labels",
            "measure.max_new_tokens=12",
            f"hydra.run.dir={out / 'run'}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def int4_dir(ort_job) -> Path:
    return next((ort_job / "cache" / "artifact").glob("*/model"))


def test_a_whole_ort_int4_job_is_an_ok_record_that_holds_only_its_runtime(ort_job):
    record = json.loads((ort_job / "run" / "record.json").read_text())
    assert record["status"] == "ok", record.get("error")
    assert record["runtime"]["name"] == "onnxruntime_genai"
    # runtime-only memory: the measuring process held no torch, transformers or llama.cpp
    assert record["runtime"]["process_held"] == ["onnxruntime_genai"]
    art = record["artifact"]
    assert art["format"] == "ort" and art["bits"] == 4 and art["block_size"] == 32 and art["accuracy_level"] == 4
    # what the builder did, read from the graph: every MatMul int4, the output layer included
    assert art["quantized"]["output_layer"] == "int4" and set(art["quantized"]["matmuls"]) == {"int4"}
    assert 0 < art["size_mib"] and 4 < art["bits_per_weight"] < 32
    assert record["metrics"]["invalid_rate"] == 0  # constrained: every answer is a label


def test_int8_leaves_the_embedding_in_float_and_a_rebuild_is_a_cache_hit(tiny_llama, tmp_path):
    quant = OrtQuant(format="ort", bits=8)
    first = build(quant, tiny_llama, tmp_path)
    again = build(quant, tiny_llama, tmp_path)
    assert again.path == first.path and again.info["quantize_wall_s"] == first.info["quantize_wall_s"]
    assert first.info["quantized"]["embedding"] == "float32" and set(first.info["quantized"]["matmuls"]) == {"int8"}
    check_onnx_dir(first.path)


def test_constrained_answers_are_the_tries_picks_from_the_runtimes_own_logits(int4_dir, smollm2_tokenizer):
    """Each answer is a label, and at each step its token is what `pick` takes from the
    logits ONNX Runtime GenAI gave for the sequence so far (the same code llama.cpp's runtime
    picks with)."""
    rt = OnnxGenAIRuntime(int4_dir, HardwareConfig(), threads=2)
    trie = label_trie(rt, LABELS, 12)
    for query in MIXED_LENGTH_QUERIES[:3]:
        ids = rt.tokenize(render_prompt(smollm2_tokenizer, query, SYSTEM))
        assert (
            ids
            == smollm2_tokenizer(render_prompt(smollm2_tokenizer, query, SYSTEM), add_special_tokens=False)["input_ids"]
        )
        got = greedy_answer(rt, ids, 12, trie)
        assert json.loads(got.text)["intent"] in LABELS
        produced = []
        rt.start(ids, trie.allowed([]))
        for _ in range(got.generated_tokens):
            token = pick(rt.generator.get_logits().reshape(-1), trie.allowed(produced))
            produced.append(token)
            if token in rt.eos_ids:
                break
            rt.step(token, trie.allowed(produced))
        assert rt.detokenize([t for t in produced if t not in rt.eos_ids]) == got.text


def test_free_greedy_answers_are_the_argmax_of_the_logits_row(int4_dir, smollm2_tokenizer):
    """Unconstrained, ONNX Runtime GenAI's own greedy search picks each token (no logits row
    copied into Python); its answers are the argmax of the logits the constrained path reads."""
    rt = OnnxGenAIRuntime(int4_dir, HardwareConfig(), threads=2)
    every_token = frozenset(range(len(smollm2_tokenizer)))
    for query in MIXED_LENGTH_QUERIES[:3]:
        ids = rt.tokenize(render_prompt(smollm2_tokenizer, query, SYSTEM))
        free = greedy_answer(rt, ids, 12)
        produced = [rt.start(ids, every_token)]  # the logits path, constrained to every token: the argmax
        while len(produced) < free.generated_tokens:
            produced.append(rt.step(produced[-1], every_token))
        assert rt.detokenize([t for t in produced if t not in rt.eos_ids]) == free.text


def _answers_and_margins(rt, prompts: list[list[int]], trie) -> list[tuple[str, float]]:
    """Each prompt's constrained answer, and the smallest gap between the two best allowed
    logits over its steps (where the trie leaves a choice)."""
    out = []
    for ids in prompts:
        produced, margin = [], float("inf")
        rt.start(ids, trie.allowed([]))
        row = _last_logits(rt)
        while True:
            allowed = trie.allowed(produced)
            if allowed is None:
                break
            if len(allowed) > 1:
                top = sorted((float(row[t]) for t in allowed), reverse=True)
                margin = min(margin, top[0] - top[1])
            token = pick(row, allowed)
            produced.append(token)
            if token in rt.eos_ids:
                break
            rt.step(token, trie.allowed(produced))
            row = _last_logits(rt)
        out.append((rt.detokenize([t for t in produced if t not in rt.eos_ids]), margin))
    return out


def _last_logits(rt):
    import numpy as np

    if isinstance(rt, OnnxGenAIRuntime):
        return rt.generator.get_logits().reshape(-1).astype(np.float64)
    from harness.runtimes.llama_cpp import logits_row

    return logits_row(rt.llm.ctx, -1, rt.n_vocab).astype(np.float64)


@pytest.mark.slow
def test_labels_agree_with_llama_cpp_where_the_logits_are_not_near_tied(tiny_llama, smollm2_tokenizer, tmp_path):
    """The same fp32 weights as an ONNX Runtime GenAI fp32 model (its builder, direct) and as
    llama.cpp's F16 GGUF: constrained answers agree on every query whose every choice is
    decided by more than the two runtimes' numeric difference (F16 weights, other kernels).
    Slow (two more builds): that the answer is the trie's pick from this runtime's logits, the
    same code as llama.cpp's, is the constrained-answers test's, on the built model."""
    from harness.formats.gguf import GGUFQuant
    from harness.runtimes.llama_cpp import LlamaCppRuntime

    fp32 = tmp_path / "ort_fp32"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(tiny_llama), "-o", str(fp32)]
    cmd += ["-p", "fp32", "-e", "cpu", "-c", str(tmp_path / "c"), "--extra_options", "hf_token=false"]
    subprocess.run(cmd, check=True, capture_output=True)
    f16 = build(GGUFQuant(format="gguf", bits=16), tiny_llama, tmp_path / "cache")
    ort = OnnxGenAIRuntime(fp32, HardwareConfig(), threads=2)
    cpp = LlamaCppRuntime(f16.path, HardwareConfig(), threads=2)
    queries = MIXED_LENGTH_QUERIES + ["track parcel", "money back please", "stop my order", "visa or mastercard?"]
    prompts = [ort.tokenize(render_prompt(smollm2_tokenizer, q, SYSTEM)) for q in queries]
    ours = _answers_and_margins(ort, prompts, label_trie(ort, LABELS, 12))
    theirs = _answers_and_margins(cpp, prompts, label_trie(cpp, LABELS, 12))
    decided = [(a, b) for (a, m), (b, _) in zip(ours, theirs) if m > 1e-2]
    assert len(decided) >= 4, [m for _, m in ours]
    assert [a for a, _ in decided] == [b for _, b in decided]


def test_an_ort_directory_measured_as_given_answers_as_the_job_that_built_it(ort_job, int4_dir, tiny_llama, tmp_path):
    # the built job's outputs: its dataset and the machine's bandwidth are cached there
    keep = [o for o in tiny_job_overrides(tiny_llama, ort_job) if not o.startswith(("model.", "train", "quant"))]
    done = run_harness(
        [
            *keep,
            "model.source=onnx",
            f"model.path={int4_dir}",
            "measure.decoding=labels",
            "measure.max_new_tokens=12",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    built = json.loads((ort_job / "run" / "record.json").read_text())
    art = record["artifact"]
    assert art["format"] == "onnx" and art["chat_template_from"] == "model directory"
    assert art["quantized"] == built["artifact"]["quantized"] and record["runtime"]["name"] == "onnxruntime_genai"

    def answers(r: dict) -> list[str]:
        return [json.loads(line)["raw_answer"] for line in (Path(r["record_dir"]) / "predictions.jsonl").open()]

    assert answers(record) == answers(built)


def _damaged(int4_dir: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / how
    shutil.copytree(int4_dir, bad)
    data = next(bad.glob("*.onnx.data"), None)
    if how == "no_config":
        (bad / "genai_config.json").unlink()
    elif how == "bad_config":
        (bad / "genai_config.json").write_text("{not json")
    elif how == "no_tokenizer":
        (bad / "tokenizer.json").unlink()
    elif how == "no_graph":
        (bad / "model.onnx").unlink()
    elif how == "cut_graph":
        graph = bad / "model.onnx"
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    elif how == "cut_data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "no_data":
        data.unlink()
    return bad


@pytest.mark.parametrize(
    "how, message",
    [
        ("no_config", "is not an ONNX Runtime GenAI model directory (no genai_config.json)"),
        ("bad_config", "genai_config.json is malformed"),
        ("no_tokenizer", "has no tokenizer (tokenizer.json missing)"),
        ("no_graph", "model.onnx, the decoder genai_config.json names, is missing"),
        ("cut_graph", "model.onnx is a damaged ONNX file"),
        ("cut_data", "is truncated (tensor"),
        ("no_data", "the external data of model.onnx, is missing"),
    ],
)
def test_a_damaged_ort_directory_is_a_clear_error(int4_dir, tmp_path, how, message):
    with pytest.raises(ValueError, match=None) as raised:
        check_onnx_dir(_damaged(int4_dir, tmp_path, how), fix="give another")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_damaged_ort_directory_as_given_is_one_line_before_any_work(int4_dir, tiny_llama, tmp_path):
    bad = _damaged(int4_dir, tmp_path, "cut_data")
    keep = [o for o in tiny_job_overrides(tiny_llama, tmp_path) if not o.startswith(("model.", "train", "quant"))]
    done = run_harness([*keep, "model.source=onnx", f"model.path={bad}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 1
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "job failed" in line]
    assert len(errors) == 1 and "is truncated (tensor" in errors[0], done.stdout[-2000:]
    assert not (tmp_path / "cache" / "artifact").exists()
    # a file where a directory is meant names what this source takes, then every other file source
    done = run_harness([*keep, "model.source=onnx", f"model.path={bad / 'model.onnx'}", "hydra.run.dir=" + str(bad)])
    assert "model.source=onnx takes an ONNX Runtime GenAI model directory" in done.stdout + done.stderr


def test_the_fidelity_reference_loop_times_the_same_decode_as_the_harness(int4_dir):
    """ONNX Runtime GenAI's benchmark loop (bench-fidelity's reference) and the harness's speed
    test on the same directory and threads: both measure, and of the same order (the verdict,
    with its interval, is `make bench-fidelity`'s, on quiet cores)."""
    from harness.measure.config import MeasureConfig
    from harness.measure.fidelity import ort_bench
    from harness.measure.run import speed_test

    ref = ort_bench(int4_dir, threads=2, prompt_tokens=16, gen_tokens=8, reps=2)
    cfg = MeasureConfig(prompt_tokens=16, gen_tokens=8, min_reps=2, min_seconds=0, warmup=1)
    ours = speed_test(OnnxGenAIRuntime(int4_dir, HardwareConfig(), threads=2), cfg)
    assert ref["decode"][0] > 0 and ref["prefill"][0] > 0
    assert 0.25 < ours.decode_tokens_per_s / ref["decode"][0] < 4
