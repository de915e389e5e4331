"""The task's prompt and answer format, shared by training and every runtime.

A query becomes chat messages rendered with the model's own chat template; the answer is a
compact JSON object, `{"intent": "<label>"}`. Rendering happens once, with the Hugging Face
tokenizer, and every runtime (transformers, llama.cpp) is given the same prompt text, so a
format cannot win or lose through a different template.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, Sequence

ANSWER_KEY = "intent"
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def system_prompt(base: str, labels: Sequence[str], list_labels: bool) -> str:
    """The system message. A fine-tuned model learns the labels from its data; a zero-shot
    model has to be told them, at the cost of a longer prompt."""
    if not list_labels:
        return base
    return f'{base} Labels: {", ".join(labels)}. Reply only with {{"{ANSWER_KEY}": "<label>"}}.'


def messages(query: str, system: str, shots: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """System, then worked (query, label) examples if any, then the query."""
    turns = [{"role": "system", "content": system}]
    for shot_query, label in shots:
        turns += [{"role": "user", "content": shot_query}, {"role": "assistant", "content": answer(label)}]
    return turns + [{"role": "user", "content": query}]


def answer(label: str) -> str:
    return json.dumps({ANSWER_KEY: label})


def render_prompt(tokenizer: Any, query: str, system: str) -> str:
    """The text the model sees before its answer: the chat template when the tokenizer has
    one, otherwise a plain two-line layout."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages(query, system), add_generation_prompt=True, tokenize=False)
    return f"{system}\nQuery: {query}\nAnswer: "


def parse_answer(raw: str, labels: Sequence[str]) -> Optional[str]:
    """The label a generated answer names, or None when it is not valid.

    Tolerant of what models wrap around JSON (whitespace, code fences, trailing text),
    strict on the label: it must be one of `labels`, exactly.
    """
    text = _FENCE.sub("", raw.strip())
    match = _OBJECT.search(text)
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    label = obj.get(ANSWER_KEY) if isinstance(obj, dict) else None
    return label if isinstance(label, str) and label in labels else None


def common_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares."""
    n = min(len(r) for r in rows)
    return next((i for i in range(n) if any(r[i] != rows[0][i] for r in rows)), n)


def reusable_prefix(prompts: list[list[int]]) -> int:
    """How many leading prompt tokens a batch can evaluate once for all its rows: those every
    prompt shares, short of each prompt's last token, which must run per row to give that
    row's next-token logits."""
    return min(common_prefix(prompts), min(len(p) for p in prompts) - 1)
