"""The `dataset` and `language` groups' schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from harness.errors import ConfigError, choices


@dataclass
class LanguageConfig:
    # code -> name; any code your own data uses (the synthetic generator knows six). A dict
    # rather than a list so that `language=[en,hr]` merges the two presets into one selection
    # (Hydra merges dicts but replaces lists).
    codes: dict[str, str] = field(default_factory=dict)
    # language=all: every language your own data holds, whatever its codes (the synthetic
    # generator writes `codes`, its six); false: only `codes`.
    all: bool = False

    def __post_init__(self) -> None:
        if not self.codes:
            raise ConfigError("language: no language selected; e.g. language=all or language=[en,hr]")

    def selection(self, dataset_kind: str) -> Optional[list[str]]:
        """The languages a dataset is cut to; None: none is cut out (language=all on your own data)."""
        return None if self.all and dataset_kind != "synthetic" else sorted(self.codes)


# files: the user's files, each read by its extension (csv and jsonl are the same kind, kept
# as the names people look for).
FILE_KINDS = ("files", "csv", "jsonl")
DATASET_KINDS = ("synthetic", *FILE_KINDS, "hf")
# The file formats read, by extension (harness.data.loaders has a reader for each).
FILE_EXTENSIONS = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".xlsx")
SPLIT_NAMES = ("train", "validation", "test")


def check_files(kind: str, files: dict[str, str]) -> None:
    """A files dataset's split -> path: a train split, no split of another name, and each
    file's format told by its extension."""
    if "train" not in files:
        raise ConfigError(
            f"dataset.kind={kind} needs dataset.files.train (a path); "
            f"e.g. dataset.files.train=data/train.{'csv' if kind == 'files' else kind}"
        )
    unknown = sorted(set(files) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"dataset.files: unknown split(s) {choices(unknown)}; use {choices(SPLIT_NAMES)}")
    for split, path in files.items():
        suffix = Path(path).suffix.lower() or "(none)"
        if suffix not in FILE_EXTENSIONS:
            raise ConfigError(
                f"dataset.files.{split}={path!r}: cannot tell its format from the extension "
                f"{suffix}; name it {', '.join(FILE_EXTENSIONS)}"
            )


@dataclass
class DatasetConfig:
    """`kind=synthetic` generates; `files` (or `csv`, `jsonl`) reads the user's files (`files`,
    split -> path; CSV, TSV, JSONL, Parquet or xlsx by extension); `hf` loads `hf_name` with the
    `datasets` library. Splits that are missing are cut from train, seeded and stratified by
    label."""

    name: str = "synthetic"
    kind: str = "synthetic"
    seed: int = 0
    # synthetic: examples per intent per language in each split.
    train_per_cell: int = 60
    validation_per_cell: int = 4
    test_per_cell: int = 20
    # files / csv / jsonl: split name -> file path; at least `train`.
    files: dict[str, Optional[str]] = field(default_factory=dict)
    # hf: dataset id (and config name); split names are the dataset's own.
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    text_column: str = "text"
    label_column: str = "intent"
    # None: every row is in `default_language`.
    language_column: Optional[str] = "language"
    default_language: str = "en"
    # The label set; empty = read from the data.
    labels: list[str] = field(default_factory=list)
    # Fractions of train cut off for a missing validation / test split.
    validation_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ConfigError(f"dataset.kind={self.kind!r} is unknown; choose one of: {choices(DATASET_KINDS)}")
        if self.kind == "synthetic":
            for split in SPLIT_NAMES:
                if getattr(self, f"{split}_per_cell") < 1:
                    raise ConfigError(f"dataset.{split}_per_cell must be >= 1")
        # The csv / jsonl presets list every split as null, so `dataset.files.test=...` needs no `+`.
        self.files = {split: path for split, path in self.files.items() if path}
        if self.kind in FILE_KINDS:
            check_files(self.kind, self.files)
        if self.kind == "hf" and not self.hf_name:
            raise ConfigError("dataset.kind=hf needs dataset.hf_name (a Hugging Face dataset id)")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError(f"dataset.{name} must be between 0 and 0.5")
        if self.labels and len(set(self.labels)) < 2:
            raise ConfigError("dataset.labels needs at least 2 distinct labels")
