"""Label-constrained decoding: greedy decoding restricted, token by token, to the answers the
task allows (`{"intent": "<label>"}` for each label), as a grammar over the label set would
restrict it in llama.cpp or `prefix_allowed_tokens_fn` in transformers. A model that does not
know the answer format (a zero-shot base model) still names one label, the one it finds most
likely at each branch, so its accuracy says what it knows about the task rather than how it
formats JSON."""

from __future__ import annotations

from typing import Optional, Sequence


class AnswerTrie:
    """The token sequences of the allowed answers as a prefix tree; after a whole answer,
    only an end-of-turn token is allowed."""

    def __init__(self, answers: Sequence[Sequence[int]], end_ids: set[int]):
        if not answers or any(not a for a in answers):
            raise ValueError("AnswerTrie needs at least one answer, none of them empty")
        self.root: dict = {}
        self.longest = max(len(a) for a in answers)
        for tokens in answers:
            node = self.root
            for token in tokens:
                node = node.setdefault(token, {})
        self.end_ids = frozenset(end_ids)

    def allowed(self, produced: Sequence[int]) -> Optional[frozenset[int]]:
        """The tokens that may follow `produced`; None once `produced` left the tree (it
        cannot, when every pick was allowed) or is complete and ended."""
        node = self.root
        for token in produced:
            if token not in node:
                return None
            node = node[token]
        return frozenset(node) if node else self.end_ids


def pick(row, allowed: Optional[frozenset[int]]) -> int:
    """The greedy token of one logits row (a numpy array or a 1-D torch tensor), among
    `allowed` when given."""
    if allowed is None:
        return int(row.argmax())
    ids = sorted(allowed)
    return ids[int(row[ids].argmax())]
