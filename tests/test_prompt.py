from __future__ import annotations

import pytest

from harness.prompt import parse_answer, render_prompt, system_prompt

LABELS = ["cancel_order", "order_status", "other"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"intent": "cancel_order"}', "cancel_order"),
        ('  {"intent":"order_status"}\n', "order_status"),
        ('```json\n{"intent": "other"}\n```', "other"),
        ('{"intent": "other"} and some chatter', "other"),
        ('{"intent": "Cancel_Order"}', None),  # strict on the label
        ('{"intent": "refund"}', None),
        ('{"label": "other"}', None),
        ('{"intent": "other"', None),
        ("cancel_order", None),
        ("", None),
    ],
)
def test_parse_answer(raw, expected):
    assert parse_answer(raw, LABELS) == expected


def test_zero_shot_system_prompt_lists_labels():
    assert "cancel_order" in system_prompt("Classify.", LABELS, list_labels=True)
    assert system_prompt("Classify.", LABELS, list_labels=False) == "Classify."


def test_prompt_uses_the_models_chat_template(smollm2_tokenizer):
    text = render_prompt(smollm2_tokenizer, "where is my order", "Classify.")
    assert text.startswith("<|im_start|>system\nClassify.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
