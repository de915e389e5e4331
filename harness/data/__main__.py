"""`python -m harness.data`: build the configured dataset (same config groups and overrides
as the main app, e.g. `language=[en,hr] dataset.seed=3`) and print its counts table, the
distinct phrasings per cell, how close each test phrasing comes to training (leaks show as
similarities near 1) and a few samples per language."""

from __future__ import annotations

import random
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config import register_configs

register_configs()
SAMPLES_PER_LANGUAGE = 3
# Character-trigram Jaccard at which a test phrasing counts as a near copy of a training one.
NEAR_COPY = 0.8
CLOSEST_SHOWN = 8


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.config import to_job_config
    from harness.data.dataset import build_dataset, read_labels, read_split

    job = to_job_config(cfg)
    data_dir = build_dataset(job.dataset, job.language.selection(job.dataset.kind), Path(job.paths.cache_dir).resolve())
    splits = {s: read_split(data_dir, s) for s in ("train", "validation", "test")}
    languages = sorted({r["language"] for rows in splits.values() for r in rows})
    console = Console()
    table = Table(title=f"{data_dir} (train / validation / test)")
    table.add_column("intent")
    for lang in languages:
        table.add_column(lang, justify="right")
    for intent in read_labels(data_dir):
        cells = []
        for lang in languages:
            counts = [sum(r["intent"] == intent and r["language"] == lang for r in rows) for rows in splits.values()]
            cells.append(" / ".join(map(str, counts)))
        table.add_row(intent, *cells)
    table.add_row(
        "total",
        *(" / ".join(str(sum(r["language"] == lang for r in rows)) for rows in splits.values()) for lang in languages),
    )
    console.print(table)
    _print_overlap(console, splits, languages)
    rng = random.Random(0)
    for lang in languages:
        rows = [r for r in splits["train"] if r["language"] == lang]
        for r in rng.sample(rows, min(SAMPLES_PER_LANGUAGE, len(rows))):
            console.print(f"[dim]{lang}[/] {r['intent']:<22} {r['text']}", highlight=False)


def _print_overlap(console, splits: dict[str, list[dict]], languages: list[str]) -> None:
    from rich.table import Table

    from harness.data.overlap import nearest_train, phrasings, summarise
    from harness.data.synthetic import phrasing_of

    def text_of(row: dict):
        return phrasing_of(row["template_id"]) if row.get("template_id") else None

    per_split = {s: phrasings(rows, text_of) for s, rows in splits.items()}
    table = Table(
        title="distinct phrasings per intent (min-max over intents): train / test, "
        f"and each test phrasing's nearest training phrasing (trigram Jaccard; >= {NEAR_COPY} = near copy)"
    )
    for column in ("language", "train", "test", "mean nearest", "max nearest", "near copies"):
        table.add_column(column, justify="right")
    pairs = nearest_train(per_split["train"], per_split["test"])
    summary = summarise(pairs, NEAR_COPY)
    for lang in languages:
        counts = []
        for split in ("train", "test"):
            by_intent = [
                sum(i == intent for i in per_split[split].get(lang, {}).values())
                for intent in sorted({r["intent"] for r in splits[split]})
            ]
            counts.append(f"{min(by_intent)}-{max(by_intent)}" if by_intent else "0")
        s = summary.get(lang, {})
        table.add_row(lang, *counts, f"{s.get('mean', 0):.2f}", f"{s.get('max', 0):.2f}", str(s.get("near", 0)))
    console.print(table)
    console.print("closest test / train phrasings:")
    for p in sorted(pairs, key=lambda p: -p.similarity)[:CLOSEST_SHOWN]:
        mark = "" if p.test_intent == p.train_intent else f" [red](train intent {p.train_intent})[/]"
        console.print(
            f"  {p.similarity:.2f} {p.language} {p.test_intent}: {p.test!r} ~ {p.train!r}{mark}", highlight=False
        )


if __name__ == "__main__":
    main()
