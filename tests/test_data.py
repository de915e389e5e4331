"""The synthetic generator: determinism, leak-freedom, coverage, and the prompt round trip."""

from __future__ import annotations

import json

from harness.data import synthetic
from harness.data.config import DatasetConfig
from harness.data.dataset import build_dataset, read_labels, read_split
from harness.data.synthetic import KNOWN_LANGUAGES
from harness.prompt import answer, parse_answer

LANGS = sorted(KNOWN_LANGUAGES)
SIZES = {"train": 10, "validation": 2, "test": 6}


def test_same_seed_gives_byte_identical_files(tmp_path):
    spec = DatasetConfig()
    a = build_dataset(spec, LANGS, tmp_path / "a")
    b = build_dataset(spec, LANGS, tmp_path / "b")
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "stats.json", "labels.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    other = build_dataset(DatasetConfig(seed=1), LANGS, tmp_path / "c")
    assert (other / "train.jsonl").read_bytes() != (a / "train.jsonl").read_bytes()


def test_validation_and_test_use_held_out_phrasings_and_no_shared_text():
    rows = synthetic.generate(LANGS, SIZES, seed=0)
    templates = {split: {r["template_id"] for r in split_rows} for split, split_rows in rows.items()}
    assert not templates["train"] & templates["test"]
    assert not templates["train"] & templates["validation"]
    assert not templates["validation"] & templates["test"]
    texts = [r["text"].casefold() for split in rows.values() for r in split]
    assert len(texts) == len(set(texts))


def test_each_split_uses_every_phrasing_it_has_room_for():
    bank = synthetic.load_bank("de")
    n = len(bank.intents["order_status"])
    rows = synthetic.generate(["de"], {"train": n, "validation": n, "test": n}, seed=0)
    used = {
        split: {r["template_id"] for r in split_rows if r["intent"] == "order_status"}
        for split, split_rows in rows.items()
    }
    assert sum(len(u) for u in used.values()) == n  # every phrasing, each in one split
    assert len(used["test"]) == n // 3 and len(used["validation"]) == n // 10


def test_every_language_has_a_hundred_distinct_phrasings_per_intent():
    for lang in synthetic.KNOWN_LANGUAGES:
        bank = synthetic.load_bank(lang)
        for intent in synthetic.INTENTS:
            phrasings = {p.casefold() for p in bank.intents[intent]}
            assert len(phrasings) >= 100, (lang, intent, len(phrasings))


def test_overlap_check_finds_a_planted_leak():
    from harness.data.overlap import nearest_train, summarise

    train = {"en": {"where is my order {order_id}": "order_status", "do you ship to {city}": "shipping_info"}}
    test = {"en": {"Where is my order {order_id}": "order_status", "cancel it please": "cancel_order"}}
    pairs = {p.test: p for p in nearest_train(train, test)}
    assert pairs["Where is my order {order_id}"].similarity == 1.0  # case does not hide it
    assert pairs["cancel it please"].similarity < 0.3
    assert summarise(list(pairs.values()), 0.8)["en"]["near"] == 1


def test_every_intent_and_language_in_every_split():
    rows = synthetic.generate(LANGS, SIZES, seed=0)
    for split, split_rows in rows.items():
        cells = {(r["language"], r["intent"]) for r in split_rows}
        assert cells == {(lang, intent) for lang in LANGS for intent in synthetic.INTENTS}, split


def test_noise_includes_missing_diacritics_and_lower_case():
    rows = synthetic.generate(["hr"], {"train": 40, "validation": 1, "test": 1}, seed=0)["train"]
    texts = [r["text"] for r in rows]
    assert any(t == t.lower() for t in texts) and any(t != t.lower() for t in texts)
    plain = [
        t for t in texts if synthetic.strip_accents(t) == t and any(w in t for w in ("narudzb", "zelim", "kosaric"))
    ]
    assert plain, "expected some Croatian queries typed without diacritics"


def test_dataset_stage_writes_splits_labels_and_stats(tmp_path):
    d = build_dataset(DatasetConfig(train_per_cell=3, validation_per_cell=1, test_per_cell=2), ["en", "de"], tmp_path)
    assert read_labels(d) == list(synthetic.INTENTS)
    counts = json.loads((d / "stats.json").read_text())["counts"]
    assert counts["test"]["de/cancel_order"] == 2
    assert len(read_split(d, "train")) == 3 * 2 * len(synthetic.INTENTS)


def test_every_label_round_trips_through_the_answer_format():
    for label in synthetic.INTENTS:
        assert parse_answer(answer(label), synthetic.INTENTS) == label


def test_spread_samples_the_whole_split_evenly():
    from harness.data.dataset import spread

    picked = spread(list(range(468)), 100)
    assert len(set(picked)) == 100 and picked[0] == 0 and picked[-1] > 450  # the last intents too
    assert max(b - a for a, b in zip(picked, picked[1:])) <= 5
    assert spread(["a", "b"], 100) == ["a", "b"]
