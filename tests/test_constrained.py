"""Label-constrained decoding (measure.decoding=labels): a model that writes anything when
free names one of the labels when constrained, on both runtimes, batch 1 and batched, and
a zero-shot job says what it knows instead of failing the JSON format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.formats.floating import FloatQuant
from harness.formats.gguf import GGUFQuant
from harness.hardware import HardwareConfig
from harness.measure.run import batched_answers, greedy_answer, label_trie
from harness.prompt import parse_answer, render_prompt
from harness.runtimes.constrain import AnswerTrie, pick

from .conftest import build, run_harness, save_tiny_llama, tiny_job_overrides

LABELS = ["order_status", "return_request", "refund_status", "payment_issue", "other"]
QUERIES = ["where is my order #123456", "hi", "refund pls", "kann ich mit paypal zahlen?", "gdje je paket"]


def test_trie_allows_the_answers_continuations_then_only_the_end():
    trie = AnswerTrie([[1, 2, 3], [1, 2, 4, 5], [6]], end_ids={0})
    assert trie.allowed([]) == {1, 6}
    assert trie.allowed([1, 2]) == {3, 4}
    assert trie.allowed([1, 2, 3]) == {0} and trie.allowed([6]) == {0}
    assert trie.allowed([2]) is None  # off the tree
    with pytest.raises(ValueError):
        AnswerTrie([[1], []], end_ids={0})


def test_pick_is_the_argmax_among_the_allowed():
    row = np.array([0.0, 5.0, 1.0, 3.0, 2.0])
    assert pick(row, None) == 1
    assert pick(row, frozenset({2, 3, 4})) == 3
    assert pick(row, frozenset({0})) == 0


@pytest.fixture(scope="module")
def random_model(smollm2_tokenizer, tmp_path_factory):
    # large weights: free answers are noise, so the constraint has all the work to do
    return save_tiny_llama(tmp_path_factory.mktemp("model"), smollm2_tokenizer, initializer_range=0.2)


def _check_constrained(rt, smollm2_tokenizer, batched: bool):
    prompts = [rt.tokenize(render_prompt(smollm2_tokenizer, q, "Classify the query.")) for q in QUERIES]
    trie = label_trie(rt, LABELS, 12)
    free = [greedy_answer(rt, ids, max_new_tokens=12).text for ids in prompts]
    assert all(parse_answer(text, LABELS) is None for text in free)  # noise, without the constraint
    constrained = [greedy_answer(rt, ids, max_new_tokens=12, trie=trie) for ids in prompts]
    assert all(parse_answer(a.text, LABELS) in LABELS for a in constrained), [a.text for a in constrained]
    # the answer, then the stop: nothing generated past the closing brace
    assert all(a.text.endswith("}") for a in constrained)
    if batched:
        together = batched_answers(rt, prompts, batch_size=len(prompts), max_new_tokens=12, trie=trie)
        assert all(parse_answer(text, LABELS) in LABELS for text in together)
        assert batched_answers(rt, prompts[:1], batch_size=1, max_new_tokens=12, trie=trie) == [constrained[0].text]
    return [a.text for a in constrained]


def test_constrained_answers_on_transformers(random_model, smollm2_tokenizer):
    rt = FloatQuant(format="fp32", bits=32).open(random_model, HardwareConfig(), threads=2)
    texts = _check_constrained(rt, smollm2_tokenizer, batched=True)
    with pytest.raises(ConfigError, match=r"more than measure.max_new_tokens=3: set measure.max_new_tokens=\d+"):
        label_trie(rt, LABELS, 3)
    prompts = [rt.tokenize(render_prompt(smollm2_tokenizer, q, "Classify the query.")) for q in QUERIES]
    # transformers' generate with prefix_allowed_tokens_fn writes what the batch-1 loop writes
    assert batched_answers(rt, prompts, batch_size=2, max_new_tokens=12, trie=label_trie(rt, LABELS, 12)) == texts


def test_constrained_answers_on_llama_cpp(random_model, smollm2_tokenizer, tmp_path):
    artifact = build(GGUFQuant(format="gguf", bits=8), random_model, tmp_path / "cache")
    rt = GGUFQuant(format="gguf", bits=8).open(artifact.path, HardwareConfig(), threads=2)
    _check_constrained(rt, smollm2_tokenizer, batched=True)


@pytest.mark.slow
def test_zero_shot_job_with_and_without_the_constraint(tiny_llama, tmp_path):
    args = [
        "--multirun",
        *tiny_job_overrides(tiny_llama, tmp_path),
        "train=none",
        "quant=gguf_q8_0",
        "measure.decoding=free,labels",
        "measure.max_new_tokens=12",
    ]
    done = run_harness(args)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("multirun/*/*/*/record.json"))]
    by_decoding = {r["job"]["decoding"]: r for r in records}
    assert set(by_decoding) == {"free", "labels"}
    assert by_decoding["labels"]["metrics"]["invalid_rate"] == 0
    assert by_decoding["free"]["metrics"]["invalid_rate"] > 0.5  # an untrained tiny model writes no JSON
    assert by_decoding["free"]["keys"]["record"] != by_decoding["labels"]["keys"]["record"]
    # the sweep's report tells the two rows apart by what differs between them
    report = next(tmp_path.glob("multirun/*/*/report/report.md")).read_text()
    assert "| gguf_q8_0 free |" in report and "| gguf_q8_0 labels |" in report
