"""`python -m harness.data`: build the configured dataset (same config groups and overrides
as the main app, e.g. `language=[en,hr] dataset.seed=3`) and print its counts table and a
few samples per language."""

from __future__ import annotations

import random
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config import register_configs

register_configs()
SAMPLES_PER_LANGUAGE = 3


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.config import to_job_config
    from harness.data.dataset import build_dataset, read_labels, read_split

    job = to_job_config(cfg)
    languages = sorted(job.language.codes)
    data_dir = build_dataset(job.dataset, languages, Path(job.paths.cache_dir).resolve())
    splits = {s: read_split(data_dir, s) for s in ("train", "validation", "test")}
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
    table.add_row("total", *(" / ".join(str(sum(r["language"] == lang for r in rows)) for rows in splits.values()) for lang in languages))
    console.print(table)
    rng = random.Random(0)
    for lang in languages:
        rows = [r for r in splits["train"] if r["language"] == lang]
        for r in rng.sample(rows, min(SAMPLES_PER_LANGUAGE, len(rows))):
            console.print(f"[dim]{lang}[/] {r['intent']:<22} {r['text']}", highlight=False)


if __name__ == "__main__":
    main()
