"""The batched accuracy pass: padded batches of prompts of different lengths give the
answers that one-at-a-time greedy decoding gives."""

from __future__ import annotations

from harness.formats.floating import FloatQuant
from harness.hardware import HardwareConfig
from harness.measure.run import batched_answers, greedy_answer
from harness.prompt import render_prompt

from .conftest import MIXED_LENGTH_QUERIES as QUERIES
from .conftest import save_tiny_llama


def test_batched_answers_match_one_at_a_time(smollm2_tokenizer, tmp_path):
    # weights large enough that a padding or masking slip changes the answers
    model = save_tiny_llama(tmp_path, smollm2_tokenizer, initializer_range=0.2)
    rt = FloatQuant(format="fp32", bits=32).open(model, HardwareConfig(), threads=2)
    prompts = [rt.tokenize(render_prompt(smollm2_tokenizer, q, "Classify the query.")) for q in QUERIES]
    assert len({len(p) for p in prompts}) > 3  # lengths differ: the batches need padding

    one_by_one = [greedy_answer(rt, ids, max_new_tokens=6).text for ids in prompts]
    assert batched_answers(rt, prompts, batch_size=3, max_new_tokens=6) == one_by_one
    assert batched_answers(rt, prompts, batch_size=len(prompts), max_new_tokens=6) == one_by_one
