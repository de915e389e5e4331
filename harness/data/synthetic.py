"""Seeded generator of multilingual e-commerce intent queries.

Phrasings and slot catalogues are written by hand per language in `templates/<code>.yaml`.
Splits do not leak: per intent and language, a seeded third of the phrasings is held out
for the test split and a tenth for the validation split (which picks the adapter, so it
must meet unseen phrasings as the test does), and per slot a seeded quarter of the values
is held out for both; each split draws its phrasings in turn, so every one is used; a text
never appears twice across all splits. The same config
and seed give byte-identical files on any machine (string seeds hash with SHA-512, not with
Python's randomised `hash`).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterator, Sequence

import yaml

# The languages the hand-written templates cover; your own data may use any code.
KNOWN_LANGUAGES = {
    "en": "English",
    "hr": "Croatian",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
}
INTENTS = (
    "product_search",
    "product_availability",
    "add_to_cart",
    "order_status",
    "cancel_order",
    "return_request",
    "refund_status",
    "shipping_info",
    "payment_issue",
    "discount_inquiry",
    "account_help",
    "contact_support",
    "other",
)
SPLITS = ("train", "validation", "test")
# Part of the dataset's cache key: a change to how rows are drawn is a new dataset.
GENERATOR_VERSION = 2
_SLOT = re.compile(r"\{(\w+)\}")
# How many fresh draws a cell may spend looking for texts not produced before.
_MAX_TRIES_PER_ROW = 50


@dataclass(frozen=True)
class Bank:
    """One language's phrasings per intent and values per slot."""

    language: str
    intents: dict[str, list[str]]
    slots: dict[str, list[str]]
    politeness: list[str]
    code_switch: dict[str, str]


@lru_cache(maxsize=None)
def template_text(language: str) -> str:
    path = resources.files("harness.data") / "templates" / f"{language}.yaml"
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def load_bank(language: str) -> Bank:
    raw = yaml.safe_load(template_text(language))
    bank = Bank(
        language=language,
        intents={k: list(v) for k, v in raw["intents"].items()},
        slots={k: [str(x) for x in v] for k, v in raw["slots"].items()},
        politeness=list(raw.get("politeness", [])),
        code_switch=dict(raw.get("code_switch", {})),
    )
    missing = [i for i in INTENTS if len(bank.intents.get(i, [])) < 3]
    if missing:
        raise ValueError(f"templates/{language}.yaml: intents with fewer than 3 phrasings: {missing}")
    for intent, phrasings in bank.intents.items():
        for p in phrasings:
            for slot in _SLOT.findall(p):
                if slot not in bank.slots and slot not in _GENERATED_SLOTS:
                    raise ValueError(f"templates/{language}.yaml: {intent}: unknown slot {{{slot}}} in {p!r}")
    return bank


def phrasing_of(template_id: str) -> str:
    """The hand-written phrasing a generated row was drawn from (`<lang>.<intent>.<index>`)."""
    language, intent, index = template_id.split(".")
    return load_bank(language).intents[intent][int(index)]


def _order_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"#{rng.randrange(100000, 999999)}"
    if style == 1:
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        return f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randrange(1000, 99999)}"
    return str(rng.randrange(10000000, 99999999))


def _price(rng: random.Random) -> str:
    amount = rng.choice([9, 15, 19, 25, 29, 35, 40, 49, 50, 59, 79, 80, 99, 120, 150, 199, 250, 300])
    return rng.choice([f"{amount}", f"{amount}€", f"{amount} eur", f"${amount}", f"{amount}.99"])


def _number(rng: random.Random) -> str:
    return str(rng.choice([1, 2, 2, 3, 4, 5]))


_GENERATED_SLOTS = {"order_id": _order_id, "price": _price, "qty": _number}


def _split_values(values: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Seeded (seen, held-out) partition: about a quarter held out, at least one each side."""
    shuffled = sorted(values)
    rng.shuffle(shuffled)
    n_held = max(1, len(shuffled) // 4) if len(shuffled) > 1 else 0
    held = shuffled[:n_held]
    seen = shuffled[n_held:]
    return seen, held or seen


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == 1:
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _noisy(text: str, bank: Bank, rng: random.Random) -> str:
    """The way people type: politeness or none, code-switched words, dropped accents,
    lower case, missing punctuation, a typo."""
    if bank.code_switch and rng.random() < 0.15:
        word, english = rng.choice(sorted(bank.code_switch.items()))
        text = re.sub(rf"\b{re.escape(word)}\b", english, text, count=1)
    if bank.politeness and rng.random() < 0.3:
        phrase = rng.choice(bank.politeness)
        text = f"{phrase} {text}" if rng.random() < 0.5 else f"{text} {phrase}"
    if rng.random() < 0.35:
        text = strip_accents(text)
    if rng.random() < 0.5:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip("?.!")
    if rng.random() < 0.2:
        text = _typo(text, rng)
    return re.sub(r"\s+", " ", text).strip()


def _fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _GENERATED_SLOTS:
            return _GENERATED_SLOTS[name](rng)
        return rng.choice(slots[name])

    return _SLOT.sub(value, template)


def _cell_rows(
    bank: Bank, intent: str, sizes: dict[str, int], seed: int, seen_texts: set[str]
) -> Iterator[dict[str, str]]:
    rng = random.Random(f"{seed}/{bank.language}/{intent}")
    phrasings = bank.intents[intent]
    ids = list(range(len(phrasings)))
    rng.shuffle(ids)
    n_test = max(1, len(ids) // 3)
    n_val = max(1, len(ids) // 10)
    split_templates = {"test": ids[:n_test], "validation": ids[n_test : n_test + n_val], "train": ids[n_test + n_val :]}

    slot_rng = random.Random(f"{seed}/{bank.language}/slots")
    seen_slots, held_slots = {}, {}
    for name in sorted(bank.slots):
        seen_slots[name], held_slots[name] = _split_values(bank.slots[name], slot_rng)
    split_slots = {"train": seen_slots, "validation": held_slots, "test": held_slots}

    for split in SPLITS:
        made = 0
        # Phrasings taken in turn (a fresh shuffle each round), so a split of n rows uses
        # min(n, phrasings) distinct ones: the model meets every training phrasing.
        turn: list[int] = []
        for _ in range(sizes[split] * _MAX_TRIES_PER_ROW):
            if made == sizes[split]:
                break
            if not turn:
                turn = list(split_templates[split])
                rng.shuffle(turn)
            t = turn.pop()
            text = _noisy(_fill(phrasings[t], split_slots[split], rng), bank, rng)
            key = text.casefold()
            if key in seen_texts:
                continue
            seen_texts.add(key)
            made += 1
            yield {
                "text": text,
                "intent": intent,
                "language": bank.language,
                "template_id": f"{bank.language}.{intent}.{t}",
                "split": split,
            }


def generate(languages: Sequence[str], sizes: dict[str, int], seed: int) -> dict[str, list[dict[str, str]]]:
    """Rows per split, in a fixed order: language, then intent, then draw order."""
    out: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    seen_texts: set[str] = set()
    for language in sorted(languages):
        bank = load_bank(language)
        for intent in INTENTS:
            for row in _cell_rows(bank, intent, sizes, seed, seen_texts):
                out[row["split"]].append(row)
    return out
