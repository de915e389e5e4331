"""OpenVINO on the tiny random Llama: NNCF's int8 (through a whole job) and int4 as cached
stages exported by OpenVINO's own conversion, the runtime's constrained answers chosen by the
same trie code as llama.cpp's from its own logits, an OpenVINO directory measured as given
(and refused, in one line, when it is damaged), and OpenVINO GenAI's own loop timing the same
decode as the harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("nncf")

from harness.errors import ConfigError  # noqa: E402
from harness.formats.openvino import OpenVINOQuant, check_openvino_dir  # noqa: E402
from harness.hardware import HardwareConfig  # noqa: E402
from harness.measure.run import greedy_answer, label_trie  # noqa: E402
from harness.prompt import render_prompt  # noqa: E402
from harness.runtimes.constrain import pick  # noqa: E402
from harness.runtimes.openvino_genai import OpenVINORuntime  # noqa: E402

from .conftest import MIXED_LENGTH_QUERIES, build, run_harness, tiny_job_overrides  # noqa: E402

LABELS = ["order_status", "refund", "cancel_order", "payment_methods"]
SYSTEM = "Classify the e-commerce query. Answer with JSON."
# SmolLM2-135M's layer inputs: hidden 576, MLP 1536, 9 heads of 64
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9}


@pytest.fixture(scope="module")
def ov_job(tiny_llama, tmp_path_factory) -> Path:
    """A whole job, quant=openvino_int8 on the untrained tiny model: built, checked, measured."""
    out = tmp_path_factory.mktemp("ov_job")
    overrides = [*tiny_job_overrides(tiny_llama, out), "quant=openvino_int8", "train=none"]
    done = run_harness(
        [*overrides, "measure.decoding=labels", "measure.max_new_tokens=12", f"hydra.run.dir={out / 'run'}"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def int8_dir(ov_job) -> Path:
    return next((ov_job / "cache" / "artifact").glob("*/model"))


@pytest.fixture(scope="module")
def int4(tiny_llama, tmp_path_factory):
    """int4 in groups of 64 (SmolLM2's group size; the tiny model's 256 and 512 take any)."""
    return build(OpenVINOQuant(format="openvino", bits=4, group_size=64), tiny_llama, tmp_path_factory.mktemp("ov4"))


def test_a_whole_openvino_int8_job_is_an_ok_record_that_holds_only_its_runtime(ov_job):
    record = json.loads((ov_job / "run" / "record.json").read_text())
    assert record["status"] == "ok", record.get("error")
    assert record["runtime"]["name"] == "openvino"
    # runtime-only memory: the measuring process held no torch, transformers, NNCF or llama.cpp
    assert set(record["runtime"]["process_held"]) <= {"openvino", "openvino_genai", "openvino_tokenizers"}
    art = record["artifact"]
    assert art["format"] == "openvino" and art["bits"] == 8 and art["mode"] == "int8_asym"
    # what NNCF did, read from the IR: every weight int8, the tied embedding and output layer too
    assert art["quantized"] == {
        "matmuls": {"int8": 15},
        "output_layer": "int8",
        "embedding": "int8",
        "group_size": None,
    }
    assert 0 < art["size_mib"] and 7 < art["bits_per_weight"] < 10
    assert record["metrics"]["invalid_rate"] == 0  # constrained: every answer is a label


def test_int4_keeps_the_embedding_and_output_layer_int8_and_a_rebuild_is_a_cache_hit(int4, tiny_llama):
    assert int4.info["quantized"] == {
        "matmuls": {"int4": 14, "int8": 1},
        "output_layer": "int8",
        "embedding": "int8",
        "group_size": 64,
    }
    again = build(OpenVINOQuant(format="openvino", bits=4, group_size=64), tiny_llama, int4.path.parent.parent.parent)
    assert again.path == int4.path and again.info["quantize_wall_s"] == int4.info["quantize_wall_s"]
    check_openvino_dir(int4.path)


def test_a_group_size_that_does_not_tile_the_model_is_refused_or_replaced_with_the_fix_named(caplog):
    with pytest.raises(ConfigError, match=r"quant.group_size=128 does not tile .* quant.group_size=64 tiles them"):
        OpenVINOQuant(format="openvino", bits=4, group_size=128).group_size_for(SMOLLM2)
    assert OpenVINOQuant(format="openvino", bits=4).group_size_for(SMOLLM2) == 64  # NNCF's 128 does not tile 576
    assert "quant.group_size=64 tiles them" in caplog.text
    assert (
        OpenVINOQuant(format="openvino", bits=4).group_size_for(
            {**SMOLLM2, "hidden_size": 512, "num_attention_heads": 8}
        )
        == 128
    )
    with pytest.raises(ConfigError, match="quant.awq applies to int4 only"):
        OpenVINOQuant(format="openvino", bits=8, awq=True)
    assert OpenVINOQuant(format="openvino", bits=4, group_size=64, awq=True).name == "openvino_int4_g64_awq"


def test_constrained_answers_are_the_tries_picks_from_the_runtimes_own_logits(int4, smollm2_tokenizer):
    """Each answer is a label, and at each step its token is what `pick` (the code llama.cpp's
    runtime picks with) takes from the logits OpenVINO gives for the whole sequence so far,
    prefilled afresh: the stateful step by step decode is the model's; the prompt is tokenized
    as the harness's tokenizer does."""
    rt = OpenVINORuntime(int4.path, HardwareConfig(), threads=2)
    fresh = OpenVINORuntime(int4.path, HardwareConfig(), threads=2)
    trie = label_trie(rt, LABELS, 12)
    for query in MIXED_LENGTH_QUERIES[:3]:
        text = render_prompt(smollm2_tokenizer, query, SYSTEM)
        ids = rt.tokenize(text)
        assert ids == smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
        got = greedy_answer(rt, ids, 12, trie)
        assert json.loads(got.text)["intent"] in LABELS
        produced: list[int] = []
        while not produced or (produced[-1] not in rt.eos_ids and len(produced) < got.generated_tokens):
            fresh.start(ids + produced)
            produced.append(pick(fresh.request.get_tensor("logits").data.reshape(-1), trie.allowed(produced)))
        assert rt.detokenize([t for t in produced if t not in rt.eos_ids]) == got.text


def test_an_openvino_directory_measured_as_given_answers_as_the_job_that_built_it(
    ov_job, int8_dir, tiny_llama, tmp_path
):
    # the built job's outputs: its dataset and the machine's bandwidth are cached there
    keep = [o for o in tiny_job_overrides(tiny_llama, ov_job) if not o.startswith(("model.", "train", "quant"))]
    overrides = ["model.source=openvino", f"model.path={int8_dir}", "measure.decoding=labels"]
    done = run_harness([*keep, *overrides, "measure.max_new_tokens=12", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    built = json.loads((ov_job / "run" / "record.json").read_text())
    art = record["artifact"]
    assert art["format"] == "openvino" and art["chat_template_from"] == "model directory"
    assert art["architecture"] == "LlamaForCausalLM" and record["runtime"]["name"] == "openvino"
    assert {k: v for k, v in built["artifact"]["quantized"].items() if k != "group_size"} == art["quantized"]

    def answers(r: dict) -> list[str]:
        return [json.loads(line)["raw_answer"] for line in (Path(r["record_dir"]) / "predictions.jsonl").open()]

    assert answers(record) == answers(built)


def _damaged(model_dir: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / how
    shutil.copytree(model_dir, bad)
    xml, weights = bad / "openvino_model.xml", bad / "openvino_model.bin"
    if how == "no_xml":
        xml.unlink()
    elif how == "no_bin":
        weights.unlink()
    elif how == "cut_bin":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "cut_xml":
        xml.write_bytes(xml.read_bytes()[: xml.stat().st_size // 3])
    elif how == "no_tokenizer":
        (bad / "openvino_detokenizer.xml").unlink()
    return bad


@pytest.mark.parametrize(
    "how, message",
    [
        ("no_xml", "is not an OpenVINO model directory (no openvino_model.xml)"),
        ("no_bin", "openvino_model.bin, the weights of openvino_model.xml, is missing"),
        ("cut_bin", "openvino_model.bin is truncated (constant"),
        ("cut_xml", "openvino_model.xml is a damaged IR"),
        ("no_tokenizer", "has no tokenizer IRs (openvino_detokenizer.xml missing"),
    ],
)
def test_a_damaged_openvino_directory_is_a_clear_error(int8_dir, tmp_path, how, message):
    with pytest.raises(ValueError) as raised:
        check_openvino_dir(_damaged(int8_dir, tmp_path, how), fix="give another")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_damaged_openvino_directory_as_given_is_one_line_before_any_work(int8_dir, tiny_llama, tmp_path):
    bad = _damaged(int8_dir, tmp_path, "cut_bin")
    keep = [o for o in tiny_job_overrides(tiny_llama, tmp_path) if not o.startswith(("model.", "train", "quant"))]
    done = run_harness([*keep, "model.source=openvino", f"model.path={bad}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 1
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "job failed" in line]
    assert len(errors) == 1 and "openvino_model.bin is truncated (constant" in errors[0], done.stdout[-2000:]
    assert not (tmp_path / "cache" / "artifact").exists()


def test_the_fidelity_reference_times_the_same_decode_as_the_harness(int4):
    """OpenVINO GenAI's benchmark timing (bench-fidelity's reference) and the harness's speed
    test on the same IR and threads: both measure, and of the same order (the verdict, with
    its interval, is `make bench-fidelity`'s, on quiet cores)."""
    from harness.measure.config import MeasureConfig
    from harness.measure.fidelity import openvino_bench
    from harness.measure.run import speed_test

    ref = openvino_bench(int4.path, threads=2, prompt_tokens=16, gen_tokens=8, reps=2)
    cfg = MeasureConfig(prompt_tokens=16, gen_tokens=8, min_reps=2, min_seconds=0, warmup=1)
    ours = speed_test(OpenVINORuntime(int4.path, HardwareConfig(), threads=2), cfg)
    assert ref["decode"][0] > 0 and ref["prefill"][0] > 0
    assert 0.25 < ours.decode_tokens_per_s / ref["decode"][0] < 4
