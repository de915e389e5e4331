"""The dataset stage: generate or load the splits once, cached under a key of their config
(and the content of the user's files), as JSONL files plus labels and a stats file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, TypeVar

from harness import stages
from harness.data import synthetic
from harness.data.config import DatasetConfig
from harness.data.loaders import DataError, load_external
from harness.store import Stage, file_digest, read_json, write_json_atomic

T = TypeVar("T")


def dataset_stage(spec: DatasetConfig, languages: Optional[Sequence[str]]) -> Stage:
    if spec.kind == "synthetic":
        content = {
            "generator": synthetic.GENERATOR_VERSION,
            **{code: synthetic.template_text(code) for code in sorted(languages)},
        }
    elif spec.kind == "hf":
        content = {}
    else:
        missing = [f"dataset.files.{s}={p!r}" for s, p in spec.files.items() if not Path(p).is_file()]
        if missing:
            raise DataError(f"{', '.join(missing)}: no such file; give an existing path")
        content = {split: file_digest(Path(p)) for split, p in sorted(spec.files.items())}
    return stages.dataset(spec, languages and sorted(languages), content)


def count_table(rows_by_split: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, int]]]:
    """split -> 'language/intent' -> count, for the stats file and the stats command."""
    return {
        split: dict(sorted(Counter(f"{r['language']}/{r['intent']}" for r in rows).items()))
        for split, rows in rows_by_split.items()
    }


def build_dataset(spec: DatasetConfig, languages: Optional[Sequence[str]], cache_root: Path) -> Path:
    """Directory holding train/validation/test .jsonl, labels.json and stats.json; `languages`
    None: every language the data holds (`LanguageConfig.selection`)."""

    def build(out: Path) -> None:
        report: dict = {}
        if spec.kind == "synthetic":
            sizes = {
                "train": spec.train_per_cell,
                "validation": spec.validation_per_cell,
                "test": spec.test_per_cell,
            }
            rows = synthetic.generate(languages, sizes, spec.seed)
            labels = list(synthetic.INTENTS)
        else:
            rows, labels, report = load_external(spec, languages)
        for split, split_rows in rows.items():
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in split_rows:
                    f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        write_json_atomic(out / "labels.json", labels)
        write_json_atomic(out / "stats.json", {"counts": count_table(rows), **report})

    return dataset_stage(spec, languages).cached(cache_root, build)


def read_split(data_dir: Path, split: str) -> list[dict]:
    with open(data_dir / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def spread(items: Sequence[T], n: int) -> list[T]:
    """At most `n` items evenly spread over `items`: a fair sample of a split, which is
    ordered by intent and language."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def read_labels(data_dir: Path) -> list[str]:
    return list(read_json(data_dir / "labels.json"))
